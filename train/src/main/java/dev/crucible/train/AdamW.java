package dev.crucible.train;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.model.Llama;
import dev.crucible.model.ParamLayout;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;

/**
 * AdamW over the model's contiguous parameter buffer, with both moments in contiguous buffers of the same layout.
 * Clipping is folded into the update: the global gradient norm is one reduction, and its scale is passed to the
 * AdamW op instead of rescaling the gradients in a separate pass.
 */
public final class AdamW implements AutoCloseable {
    private final Llama model;
    private final Backend be;
    private final Buffer m, v, norm;

    public AdamW(Llama model) {
        this.model = model;
        this.be = model.backend();
        long n = model.layout().total();
        this.m = be.allocate(DType.F32, n);
        this.v = be.allocate(DType.F32, n);
        this.norm = be.allocate(DType.F32, 1);
        be.run(new Op.Fill(m, 0f));
        be.run(new Op.Fill(v, 0f));
    }

    public Buffer m() { return m; }

    public Buffer v() { return v; }

    /** The global L2 norm of the current gradients. */
    public double gradNorm() {
        be.run(new Op.SumSquares(model.grads(), norm));
        float[] out = new float[1];
        be.copyOut(norm, MemorySegment.ofArray(out));
        return Math.sqrt(out[0]);
    }

    /** torch.nn.utils.clip_grad_norm_'s coefficient: min(1, clip / (norm + 1e-6)); 1 when clipping is off. */
    public static double clipCoef(double gradNorm, double clip) {
        return clip <= 0 ? 1.0 : Math.min(1.0, clip / (gradNorm + 1e-6));
    }

    /** Applies one update (step counts from 1) with the given learning rate and gradient scale. */
    public void update(OptimizerConfig c, int step, double lr, double gradScale) {
        for (ParamLayout.Tensor t : model.layout().tensors()) {
            be.run(new Op.AdamW(model.params().slice(t.offset(), t.size()), model.grads().slice(t.offset(), t.size()),
                    m.slice(t.offset(), t.size()), v.slice(t.offset(), t.size()), (float) lr, (float) c.beta1(),
                    (float) c.beta2(), (float) c.eps(), t.decays() ? (float) c.weightDecay() : 0f, step, (float) gradScale));
        }
    }

    @Override
    public void close() {
        m.close();
        v.close();
        norm.close();
    }
}
