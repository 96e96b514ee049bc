package dev.crucible.qualify;

/** What qualification concludes about a backend. */
public enum Verdict {
    /** Every op passes and a short training run tracks the reference: the backend can train and serve. */
    CAN_TRAIN,
    /** Forward ops pass but training does not: the backend can serve models, not train them. */
    CAN_SERVE,
    /** Forward ops fail: the backend cannot be trusted with this model. */
    CANNOT
}
