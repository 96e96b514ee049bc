package dev.crucible.qualify;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;

import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;

/**
 * What qualification needs to know about each op beyond {@link Op#outputs()}: its inputs, the names of its outputs,
 * whether serving needs it, and how to rebuild it on other buffers (to run one op stream on two backends). Every
 * method is an exhaustive switch over the sealed {@link Op}, so a new op breaks this build until it is described.
 */
public final class OpIO {
    private OpIO() {
    }

    /** Every op family, by {@link Op#name()}, in the order of {@link Op}. */
    public static final List<String> ALL = List.of("Fill", "Copy", "Embedding", "EmbeddingBackward", "RmsNorm",
            "RmsNormBackward", "MatMul", "Rope", "Attention", "AttentionBackward", "SwiGlu", "SwiGluBackward", "Add",
            "CrossEntropy", "SumSquares", "AdamW", "PagedAttention");

    /**
     * Ops that inference uses (the cached forward pass of the model); all the others only training needs. A backend
     * that fails one of these cannot serve; one that fails only the rest can serve but not train.
     */
    public static final List<String> SERVING = List.of("Fill", "Copy", "Embedding", "RmsNorm", "MatMul", "Rope",
            "Attention", "SwiGlu", "Add", "PagedAttention");

    public static boolean serving(String op) {
        return SERVING.contains(op);
    }

    /** The canonical spelling of an op family name (case-insensitive), or an exception listing them. */
    public static String family(String name) {
        for (String op : ALL) if (op.equalsIgnoreCase(name.trim())) return op;
        throw new IllegalArgumentException("unknown op '" + name + "'; ops are " + String.join(", ", ALL));
    }

    /** The buffers the op reads (including outputs it accumulates into or updates in place). */
    public static List<Buffer> inputs(Op op) {
        List<Buffer> in = switch (op) {
            case Op.Fill o -> List.of();
            case Op.Copy o -> List.of(o.src());
            case Op.Embedding o -> List.of(o.ids(), o.table());
            case Op.EmbeddingBackward o -> List.of(o.ids(), o.dOut(), o.dTable());
            case Op.RmsNorm o -> List.of(o.x(), o.weight());
            case Op.RmsNormBackward o -> List.of(o.dOut(), o.x(), o.weight(), o.rstd(), o.dx(), o.dWeight());
            case Op.MatMul o -> o.accumulate() ? List.of(o.a(), o.b(), o.c()) : List.of(o.a(), o.b());
            case Op.Rope o -> List.of(o.x(), o.positions());
            case Op.Attention o -> List.of(o.q(), o.k(), o.v());
            case Op.AttentionBackward o -> List.of(o.dOut(), o.q(), o.k(), o.v(), o.out(), o.lse());
            case Op.SwiGlu o -> List.of(o.gate(), o.up());
            case Op.SwiGluBackward o -> List.of(o.dOut(), o.gate(), o.up());
            case Op.Add o -> List.of(o.a(), o.b());
            case Op.CrossEntropy o -> List.of(o.logits(), o.targets());
            case Op.SumSquares o -> List.of(o.x());
            case Op.AdamW o -> List.of(o.param(), o.grad(), o.m(), o.v());
            case Op.PagedAttention o -> List.of(o.q(), o.kPool(), o.vPool(), o.pageTable(), o.lengths());
        };
        return new ArrayList<>(in);
    }

    /** Names of {@link Op#outputs()}, in the same order: the record component names. */
    public static List<String> outputNames(Op op) {
        return switch (op) {
            case Op.Fill o -> List.of("out");
            case Op.Copy o -> List.of("dst");
            case Op.Embedding o -> List.of("out");
            case Op.EmbeddingBackward o -> List.of("dTable");
            case Op.RmsNorm o -> o.rstd() == null ? List.of("out") : List.of("out", "rstd");
            case Op.RmsNormBackward o -> List.of("dx", "dWeight");
            case Op.MatMul o -> List.of("c");
            case Op.Rope o -> List.of("x");
            case Op.Attention o -> o.lse() == null ? List.of("out") : List.of("out", "lse");
            case Op.AttentionBackward o -> List.of("dq", "dk", "dv");
            case Op.SwiGlu o -> List.of("out");
            case Op.SwiGluBackward o -> List.of("dGate", "dUp");
            case Op.Add o -> List.of("out");
            case Op.CrossEntropy o -> o.dLogits() == null ? List.of("losses") : List.of("losses", "dLogits");
            case Op.SumSquares o -> List.of("out");
            case Op.AdamW o -> List.of("param", "m", "v");
            case Op.PagedAttention o -> List.of("out");
        };
    }

    /** The same op on other buffers: every buffer b becomes {@code f(b)} (null stays null). */
    public static Op remap(Op op, UnaryOperator<Buffer> f) {
        UnaryOperator<Buffer> m = b -> b == null ? null : f.apply(b);
        return switch (op) {
            case Op.Fill o -> new Op.Fill(m.apply(o.out()), o.value());
            case Op.Copy o -> new Op.Copy(m.apply(o.src()), m.apply(o.dst()));
            case Op.Embedding o -> new Op.Embedding(m.apply(o.ids()), m.apply(o.table()), m.apply(o.out()), o.n(), o.dim());
            case Op.EmbeddingBackward o -> new Op.EmbeddingBackward(m.apply(o.ids()), m.apply(o.dOut()),
                    m.apply(o.dTable()), o.n(), o.dim());
            case Op.RmsNorm o -> new Op.RmsNorm(m.apply(o.x()), m.apply(o.weight()), m.apply(o.out()), m.apply(o.rstd()),
                    o.n(), o.dim(), o.eps());
            case Op.RmsNormBackward o -> new Op.RmsNormBackward(m.apply(o.dOut()), m.apply(o.x()), m.apply(o.weight()),
                    m.apply(o.rstd()), m.apply(o.dx()), m.apply(o.dWeight()), o.n(), o.dim());
            case Op.MatMul o -> new Op.MatMul(m.apply(o.a()), m.apply(o.b()), m.apply(o.c()), o.m(), o.n(), o.k(),
                    o.transA(), o.transB(), o.accumulate());
            case Op.Rope o -> new Op.Rope(m.apply(o.x()), m.apply(o.positions()), o.n(), o.heads(), o.headDim(),
                    o.theta(), o.inverse());
            case Op.Attention o -> new Op.Attention(m.apply(o.q()), m.apply(o.k()), m.apply(o.v()), m.apply(o.out()),
                    m.apply(o.lse()), o.batch(), o.tq(), o.tk(), o.heads(), o.kvHeads(), o.headDim(), o.qPos0(),
                    o.kvBatchStride());
            case Op.AttentionBackward o -> new Op.AttentionBackward(m.apply(o.dOut()), m.apply(o.q()), m.apply(o.k()),
                    m.apply(o.v()), m.apply(o.out()), m.apply(o.lse()), m.apply(o.dq()), m.apply(o.dk()),
                    m.apply(o.dv()), o.batch(), o.t(), o.heads(), o.kvHeads(), o.headDim());
            case Op.SwiGlu o -> new Op.SwiGlu(m.apply(o.gate()), m.apply(o.up()), m.apply(o.out()), o.n());
            case Op.SwiGluBackward o -> new Op.SwiGluBackward(m.apply(o.dOut()), m.apply(o.gate()), m.apply(o.up()),
                    m.apply(o.dGate()), m.apply(o.dUp()), o.n());
            case Op.Add o -> new Op.Add(m.apply(o.a()), m.apply(o.b()), m.apply(o.out()), o.n());
            case Op.CrossEntropy o -> new Op.CrossEntropy(m.apply(o.logits()), m.apply(o.targets()),
                    m.apply(o.losses()), m.apply(o.dLogits()), o.n(), o.vocab(), o.gradScale());
            case Op.SumSquares o -> new Op.SumSquares(m.apply(o.x()), m.apply(o.out()));
            case Op.AdamW o -> new Op.AdamW(m.apply(o.param()), m.apply(o.grad()), m.apply(o.m()), m.apply(o.v()),
                    o.lr(), o.beta1(), o.beta2(), o.eps(), o.weightDecay(), o.step(), o.gradScale());
            case Op.PagedAttention o -> new Op.PagedAttention(m.apply(o.q()), m.apply(o.kPool()), m.apply(o.vPool()),
                    m.apply(o.pageTable()), m.apply(o.lengths()), m.apply(o.out()), o.rows(), o.heads(), o.kvHeads(),
                    o.headDim(), o.pageSize(), o.maxPages());
        };
    }
}
