package dev.crucible.qualify;

/**
 * One output of one op, as two backends computed it.
 *
 * @param index      the op's position in the step (from 0)
 * @param phase      forward, backward or optimizer
 * @param layer      "embed", "layer N", "final", "loss" or "optim"
 * @param what       what the op computes there ("q_proj", "dW down_proj", …)
 * @param op         the op family
 * @param tensor     the output's name
 * @param elements   its length
 * @param nmse       Σ(b−a)²/Σa² over positions where both are finite (a the first backend); the mean squared error
 *                   when a is all zeros; NaN when not compared
 * @param maxAbs     the largest |b − a| over positions where both are finite
 * @param bitDiffs   elements whose bits differ
 * @param nonFiniteA NaN/Inf elements in a's output
 * @param nonFiniteB NaN/Inf elements in b's output
 * @param problem    why the op could not be compared ("unsupported by …", "hung"), or empty
 */
public record OpDiff(int index, String phase, String layer, String what, String op, String tensor, long elements,
                     double nmse, double maxAbs, long bitDiffs, long nonFiniteA, long nonFiniteB, String problem) {

    /** Over tolerance, more non-finite values on b than on a, or not comparable at all. */
    public boolean diverges(double tolerance) {
        return !problem.isEmpty() || nonFiniteB > nonFiniteA || nmse > tolerance || Double.isNaN(nmse);
    }

    /** "#5 forward layer 0 MatMul q_proj → 'q'". */
    public String where() {
        return "#" + index + " " + phase + " " + layer + " " + op + " " + what + " → '" + tensor + "'";
    }
}
