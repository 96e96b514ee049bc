package dev.crucible.train.task;

/**
 * One arithmetic problem: {@code a op b}, its prompt (e.g. {@code "347+285="}), the worked solution the model should
 * write after the prompt (ending with {@code "\n"}), and the exact answer. Made by {@link ArithmeticTask#make}.
 */
public record Problem(long a, char op, long b, String prompt, String solution, long answer) {
    /** The full training text: prompt followed by solution. */
    public String text() {
        return prompt + solution;
    }
}
