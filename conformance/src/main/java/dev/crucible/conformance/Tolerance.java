package dev.crucible.conformance;

/**
 * The tolerances, each with the reason it is what it is. NMSE ≈ (typical relative error)², and one f32 rounding is a
 * relative error of at most 6e-8 (NMSE ~4e-15), so every figure below leaves a backend room to compute in f32 where
 * the reference computes in double, and still fails an error of 1e-3 relative (NMSE 1e-6) by orders of magnitude.
 */
public final class Tolerance {
    private Tolerance() {
    }

    /** Fill, Copy, Embedding move data without arithmetic: any difference at all is a bug. */
    public static final double EXACT = 0;

    /**
     * One rounding per element, maybe in another order: Add (a single f32 add), EmbeddingBackward (a scatter-add of
     * a few rows per element, whose order may differ). A few ulp at most: NMSE well under 1e-13.
     */
    public static final double ELEMENTWISE = 1e-12;

    /**
     * Elementwise through a transcendental or a square root: SwiGlu and its backward (exp), Rope (sin/cos of an
     * f32 angle, which every backend must form the HF way: position · f32 inverse frequency, in f32), AdamW (sqrt,
     * division, bias corrections). An f32 libm or a fast exp is a few ulp; a wrong angle formula at position ~2000
     * is ~1e-4 relative (NMSE ~1e-8) and fails.
     */
    public static final double TRANSCENDENTAL = 1e-10;

    /**
     * Reductions and matrix products: RmsNorm (forward and backward), SumSquares, MatMul. An f32 accumulation over K
     * terms in another order costs ~√K ulp, up to ~1e-5 relative for the K used here (NMSE 1e-10), so 1e-9 gives
     * blocked and vectorised sums room, and still rejects a dropped term or a 1e-3 perturbation.
     */
    public static final double REDUCTION = 1e-9;

    /**
     * A matmul on stored Q4_0 or Q8_0 weights may quantize its activations to 8 bits per 32-element block (scale max|x|/127),
     * as llama.cpp does for its quantized dot products: each activation is then off by up to half a step of 1/127 of
     * its block's largest magnitude, NMSE ~2e-5 on Gaussian data. 1e-4 admits that, and still fails a dropped block
     * (at the K used here a third or more of the sum), a wrong scale or a wrong nibble order (NMSE ≥ 1e-2).
     */
    public static final double QUANTIZED_ACTIVATIONS = 1e-4;

    /**
     * Attention (forward and backward) and CrossEntropy: softmax over up to a few hundred terms (exp, a max, a sum,
     * a log), then a weighted sum, with f32 accumulation in fast backends: same budget as a reduction.
     */
    public static final double SOFTMAX = 1e-9;

    /**
     * Finite-difference check: the largest relative difference between the backward op's gradient and central
     * differences of the reference forward, per sampled coordinate, measured against max(|fd|, |grad|, 1% of the
     * tensor's largest gradient). With h = 3e-2 and Richardson extrapolation the truncation error is ~h⁴ ≈ 1e-6 and
     * the f32 rounding of the forward outputs adds ~1e-7/h relative to the outputs; the reference's own backward ops
     * stay under ~1e-3 here. 1e-2 leaves a backend's f32 backward room and is far below any wrong formula (a
     * missing term or factor is an O(1) error).
     */
    public static final double GRADIENT = 1e-2;
}
