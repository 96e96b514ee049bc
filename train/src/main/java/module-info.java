/** Training: the trainer loop, optimizer, schedules, data pipeline, checkpoints, built-in tasks. */
module dev.crucible.train {
    requires transitive dev.crucible.model;
    requires transitive dev.crucible.formats;
    requires com.fasterxml.jackson.databind;
    exports dev.crucible.train;
    exports dev.crucible.train.data;
    exports dev.crucible.train.task;
    exports dev.crucible.train.fault;
}
