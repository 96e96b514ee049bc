package dev.crucible.backend.ref;

import dev.crucible.backend.Backend;
import dev.crucible.backend.BackendProvider;
import dev.crucible.backend.HostBackend;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The executable specification: every op as the most obvious scalar loop, one thread, sums in double. Other
 * backends are correct when they agree with this one within the conformance tolerances. Never optimise it.
 */
public final class RefBackend extends HostBackend {
    private static final ValueLayout.OfShort HALF = ValueLayout.JAVA_SHORT_UNALIGNED;

    public static final class Provider implements BackendProvider {
        @Override
        public String name() { return "ref"; }

        @Override
        public Backend create(int threads) { return new RefBackend(); }
    }

    @Override
    public String name() { return "ref"; }

    @Override
    public boolean supports(Op op) {
        return switch (op) {
            case Op.Fill f -> f.out().type() == DType.F32 || f.out().type() == DType.I32;
            default -> true;
        };
    }

    @Override
    public void run(Op op) {
        if (!supports(op)) throw new UnsupportedOpException(name(), op);
        switch (op) {
            case Op.Fill o -> fill(o);
            case Op.Copy o -> copy(o);
            case Op.Embedding o -> embedding(o);
            case Op.EmbeddingBackward o -> embeddingBackward(o);
            case Op.RmsNorm o -> rmsNorm(o);
            case Op.RmsNormBackward o -> rmsNormBackward(o);
            case Op.MatMul o -> matmul(o);
            case Op.Rope o -> rope(o);
            case Op.Attention o -> attention(o);
            case Op.AttentionBackward o -> attentionBackward(o);
            case Op.SwiGlu o -> swiglu(o);
            case Op.SwiGluBackward o -> swigluBackward(o);
            case Op.Add o -> add(o);
            case Op.CrossEntropy o -> crossEntropy(o);
            case Op.SumSquares o -> sumSquares(o);
            case Op.AdamW o -> adamw(o);
            case Op.PagedAttention o -> pagedAttention(o);
        }
    }

    private static HostBuffer h(dev.crucible.backend.Buffer b) { return HostBuffer.of(b); }

    private static void fill(Op.Fill o) {
        HostBuffer out = h(o.out());
        for (long i = 0; i < out.elements(); i++) {
            if (out.type() == DType.I32) out.setInt(i, (int) o.value());
            else out.setFloat(i, o.value());
        }
    }

    private static void embedding(Op.Embedding o) {
        HostBuffer ids = h(o.ids()), table = h(o.table()), out = h(o.out());
        long vocab = table.elements() / o.dim();
        float[] row = new float[o.dim()];
        for (int n = 0; n < o.n(); n++) {
            int id = ids.getInt(n);
            if (id < 0 || id >= vocab) throw new IndexOutOfBoundsException("token id " + id + " outside vocab " + vocab);
            Blocks.decode(table.type(), table.segment(), table.type().bytes((long) id * o.dim()), o.dim(), row, 0);
            for (int c = 0; c < o.dim(); c++) out.setFloat((long) n * o.dim() + c, row[c]);
        }
    }

    private static void embeddingBackward(Op.EmbeddingBackward o) {
        HostBuffer ids = h(o.ids()), dOut = h(o.dOut()), dTable = h(o.dTable());
        for (int n = 0; n < o.n(); n++) {
            long row = (long) ids.getInt(n) * o.dim();
            for (int c = 0; c < o.dim(); c++) {
                dTable.setFloat(row + c, dTable.getFloat(row + c) + dOut.getFloat((long) n * o.dim() + c));
            }
        }
    }

    private static void rmsNorm(Op.RmsNorm o) {
        HostBuffer x = h(o.x()), w = h(o.weight()), out = h(o.out());
        int dim = o.dim();
        for (int n = 0; n < o.n(); n++) {
            long base = (long) n * dim;
            double ss = 0;
            for (int c = 0; c < dim; c++) ss += (double) x.getFloat(base + c) * x.getFloat(base + c);
            double rstd = 1.0 / Math.sqrt(ss / dim + o.eps());
            for (int c = 0; c < dim; c++) out.setFloat(base + c, (float) (x.getFloat(base + c) * rstd * w.getFloat(c)));
            if (o.rstd() != null) h(o.rstd()).setFloat(n, (float) rstd);
        }
    }

    private static void rmsNormBackward(Op.RmsNormBackward o) {
        HostBuffer dOut = h(o.dOut()), x = h(o.x()), w = h(o.weight()), rstdB = h(o.rstd());
        HostBuffer dx = h(o.dx()), dw = h(o.dWeight());
        int dim = o.dim();
        double[] dwAcc = new double[dim];
        for (int n = 0; n < o.n(); n++) {
            long base = (long) n * dim;
            double rstd = rstdB.getFloat(n);
            double dot = 0; // Σ dx̂ · x̂
            for (int c = 0; c < dim; c++) {
                double xhat = x.getFloat(base + c) * rstd;
                dot += dOut.getFloat(base + c) * (double) w.getFloat(c) * xhat;
                dwAcc[c] += dOut.getFloat(base + c) * xhat;
            }
            double mean = dot / dim;
            for (int c = 0; c < dim; c++) {
                double xhat = x.getFloat(base + c) * rstd;
                double dxhat = dOut.getFloat(base + c) * (double) w.getFloat(c);
                dx.setFloat(base + c, (float) (dx.getFloat(base + c) + rstd * (dxhat - xhat * mean)));
            }
        }
        for (int c = 0; c < dim; c++) dw.setFloat(c, (float) (dw.getFloat(c) + dwAcc[c]));
    }

    private static void matmul(Op.MatMul o) {
        HostBuffer a = h(o.a()), b = h(o.b()), c = h(o.c());
        int m = o.m(), n = o.n(), k = o.k();
        boolean decoded = b.type() != DType.F32; // a weight matrix (N,K) in a storage type: decode one row at a time
        float[] bRow = new float[decoded ? k : 0];
        for (int j = 0; j < n; j++) {
            if (decoded) Blocks.decode(b.type(), b.segment(), b.type().bytes((long) j * k), k, bRow, 0);
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    float av = o.transA() ? a.getFloat((long) p * m + i) : a.getFloat((long) i * k + p);
                    float bv = decoded ? bRow[p] : o.transB() ? b.getFloat((long) j * k + p) : b.getFloat((long) p * n + j);
                    s += (double) av * bv;
                }
                long ci = (long) i * n + j;
                c.setFloat(ci, (float) (o.accumulate() ? c.getFloat(ci) + s : s));
            }
        }
    }

    /** θ^(-2j/D) rounded the way HF computes it in float32; shared by every backend's rope. */
    public static float ropeInvFreq(float theta, int j, int headDim) {
        float exponent = (float) (2 * j) / headDim;
        return (float) (1.0 / (float) Math.pow(theta, exponent));
    }

    private static void rope(Op.Rope o) {
        HostBuffer x = h(o.x()), pos = h(o.positions());
        int d = o.headDim(), half = d / 2;
        for (int n = 0; n < o.n(); n++) {
            int p = pos.getInt(n);
            for (int hh = 0; hh < o.heads(); hh++) {
                long base = ((long) n * o.heads() + hh) * d;
                for (int j = 0; j < half; j++) {
                    float angle = p * ropeInvFreq(o.theta(), j, d);
                    double cos = (float) Math.cos(angle), sin = (float) Math.sin(angle);
                    if (o.inverse()) sin = -sin;
                    double x1 = x.getFloat(base + j), x2 = x.getFloat(base + j + half);
                    x.setFloat(base + j, (float) (x1 * cos - x2 * sin));
                    x.setFloat(base + j + half, (float) (x2 * cos + x1 * sin));
                }
            }
        }
    }

    private static void attention(Op.Attention o) {
        HostBuffer q = h(o.q()), k = h(o.k()), v = h(o.v()), out = h(o.out());
        int hq = o.heads(), hkv = o.kvHeads(), d = o.headDim(), group = hq / hkv;
        double scale = 1.0 / Math.sqrt(d);
        double[] s = new double[o.tk()];
        for (int b = 0; b < o.batch(); b++) {
            for (int hh = 0; hh < hq; hh++) {
                int kh = hh / group;
                for (int i = 0; i < o.tq(); i++) {
                    long qb = (((long) b * o.tq() + i) * hq + hh) * d;
                    int last = o.qPos0() + i;
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j <= last; j++) {
                        long kb = b * o.kvBatchStride() + ((long) j * hkv + kh) * d;
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += (double) q.getFloat(qb + c) * k.getFloat(kb + c);
                        s[j] = dot * scale;
                        max = Math.max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j <= last; j++) sum += Math.exp(s[j] - max);
                    for (int c = 0; c < d; c++) {
                        double acc = 0;
                        for (int j = 0; j <= last; j++) {
                            long vb = b * o.kvBatchStride() + ((long) j * hkv + kh) * d;
                            acc += Math.exp(s[j] - max) / sum * v.getFloat(vb + c);
                        }
                        out.setFloat(qb + c, (float) acc);
                    }
                    if (o.lse() != null) h(o.lse()).setFloat(((long) b * hq + hh) * o.tq() + i, (float) (max + Math.log(sum)));
                }
            }
        }
    }

    private static void copy(Op.Copy o) {
        if (o.src().type() == o.dst().type()) {
            HostBuffer.seg(o.dst()).copyFrom(HostBuffer.seg(o.src()));
            return;
        }
        HostBuffer src = h(o.src());                                   // F32 → F16, the only conversion Op.Copy allows
        MemorySegment dst = HostBuffer.seg(o.dst());
        for (long i = 0; i < src.elements(); i++) dst.setAtIndex(HALF, i, Float.floatToFloat16(src.getFloat(i)));
    }

    /** Element i of an F32 or F16 buffer, as a float (a half widened exactly). */
    private static float real(HostBuffer b, long i) {
        return b.type() == DType.F16 ? Float.float16ToFloat(b.segment().getAtIndex(HALF, i)) : b.getFloat(i);
    }

    private static void pagedAttention(Op.PagedAttention o) {
        HostBuffer q = h(o.q()), kp = h(o.kPool()), vp = h(o.vPool()), table = h(o.pageTable()), out = h(o.out());
        HostBuffer lengths = h(o.lengths());
        int hq = o.heads(), hkv = o.kvHeads(), d = o.headDim(), group = hq / hkv, ps = o.pageSize();
        double scale = 1.0 / Math.sqrt(d);
        for (int r = 0; r < o.rows(); r++) {
            int len = lengths.getInt(r);
            if (len < 1 || len > (long) o.maxPages() * ps) {
                throw new IndexOutOfBoundsException("PagedAttention: row " + r + " sees " + len + " keys; a page-table row holds 1.." + (long) o.maxPages() * ps);
            }
            long[] key = new long[len]; // element offset of token t's KV row in the pools
            for (int t = 0; t < len; t++) {
                int page = table.getInt((long) r * o.maxPages() + t / ps);
                if (page < 0 || page >= o.pages()) {
                    throw new IndexOutOfBoundsException("PagedAttention: row " + r + " names page " + page + " of a pool of " + o.pages());
                }
                key[t] = ((long) page * ps + t % ps) * hkv * d;
            }
            double[] s = new double[len];
            for (int hh = 0; hh < hq; hh++) {
                int kh = hh / group;
                long qb = ((long) r * hq + hh) * d;
                double max = Double.NEGATIVE_INFINITY;
                for (int t = 0; t < len; t++) {
                    double dot = 0;
                    for (int c = 0; c < d; c++) dot += (double) q.getFloat(qb + c) * real(kp, key[t] + (long) kh * d + c);
                    s[t] = dot * scale;
                    max = Math.max(max, s[t]);
                }
                double sum = 0;
                for (int t = 0; t < len; t++) sum += Math.exp(s[t] - max);
                for (int c = 0; c < d; c++) {
                    double acc = 0;
                    for (int t = 0; t < len; t++) acc += Math.exp(s[t] - max) / sum * real(vp, key[t] + (long) kh * d + c);
                    out.setFloat(qb + c, (float) acc);
                }
            }
        }
    }

    private static void attentionBackward(Op.AttentionBackward o) {
        HostBuffer dOut = h(o.dOut()), q = h(o.q()), k = h(o.k()), v = h(o.v()), out = h(o.out()), lse = h(o.lse());
        HostBuffer dq = h(o.dq()), dk = h(o.dk()), dv = h(o.dv());
        int t = o.t(), hq = o.heads(), hkv = o.kvHeads(), d = o.headDim(), group = hq / hkv;
        double scale = 1.0 / Math.sqrt(d);
        double[] dkAcc = new double[(int) dk.elements()], dvAcc = new double[(int) dv.elements()];
        for (int b = 0; b < o.batch(); b++) {
            for (int hh = 0; hh < hq; hh++) {
                int kh = hh / group;
                for (int i = 0; i < t; i++) {
                    long qb = (((long) b * t + i) * hq + hh) * d;
                    double l = lse.getFloat(((long) b * hq + hh) * t + i);
                    double delta = 0; // Σ_j p_j dP_j = dO · O
                    for (int c = 0; c < d; c++) delta += (double) dOut.getFloat(qb + c) * out.getFloat(qb + c);
                    double[] dqAcc = new double[d];
                    for (int j = 0; j <= i; j++) {
                        long kb = (((long) b * t + j) * hkv + kh) * d;
                        double dot = 0, dp = 0;
                        for (int c = 0; c < d; c++) {
                            dot += (double) q.getFloat(qb + c) * k.getFloat(kb + c);
                            dp += (double) dOut.getFloat(qb + c) * v.getFloat(kb + c);
                        }
                        double p = Math.exp(dot * scale - l);
                        double ds = p * (dp - delta) * scale;
                        for (int c = 0; c < d; c++) {
                            dqAcc[c] += ds * k.getFloat(kb + c);
                            dkAcc[(int) (kb + c)] += ds * q.getFloat(qb + c);
                            dvAcc[(int) (kb + c)] += p * dOut.getFloat(qb + c);
                        }
                    }
                    for (int c = 0; c < d; c++) dq.setFloat(qb + c, (float) dqAcc[c]);
                }
            }
        }
        for (int i = 0; i < dkAcc.length; i++) {
            dk.setFloat(i, (float) dkAcc[i]);
            dv.setFloat(i, (float) dvAcc[i]);
        }
    }

    private static void swiglu(Op.SwiGlu o) {
        HostBuffer g = h(o.gate()), u = h(o.up()), out = h(o.out());
        for (long i = 0; i < o.n(); i++) {
            double gv = g.getFloat(i);
            out.setFloat(i, (float) (gv / (1 + Math.exp(-gv)) * u.getFloat(i)));
        }
    }

    private static void swigluBackward(Op.SwiGluBackward o) {
        HostBuffer dOut = h(o.dOut()), g = h(o.gate()), u = h(o.up()), dg = h(o.dGate()), du = h(o.dUp());
        for (long i = 0; i < o.n(); i++) {
            double gv = g.getFloat(i), sig = 1 / (1 + Math.exp(-gv)), dy = dOut.getFloat(i);
            du.setFloat(i, (float) (dy * gv * sig));
            dg.setFloat(i, (float) (dy * u.getFloat(i) * sig * (1 + gv * (1 - sig))));
        }
    }

    private static void add(Op.Add o) {
        HostBuffer a = h(o.a()), b = h(o.b()), out = h(o.out());
        for (long i = 0; i < o.n(); i++) out.setFloat(i, a.getFloat(i) + b.getFloat(i));
    }

    private static void crossEntropy(Op.CrossEntropy o) {
        HostBuffer logits = h(o.logits()), targets = h(o.targets()), losses = h(o.losses());
        HostBuffer dl = o.dLogits() == null ? null : h(o.dLogits());
        int vocab = o.vocab();
        for (int n = 0; n < o.n(); n++) {
            long base = (long) n * vocab;
            int t = targets.getInt(n);
            if (t >= vocab) throw new IndexOutOfBoundsException("target " + t + " outside vocab " + vocab);
            double max = Double.NEGATIVE_INFINITY;
            for (int c = 0; c < vocab; c++) max = Math.max(max, logits.getFloat(base + c));
            double sum = 0;
            for (int c = 0; c < vocab; c++) sum += Math.exp(logits.getFloat(base + c) - max);
            double lse = max + Math.log(sum);
            losses.setFloat(n, t < 0 ? 0f : (float) (lse - logits.getFloat(base + t)));
            if (dl != null) {
                for (int c = 0; c < vocab; c++) {
                    double p = Math.exp(logits.getFloat(base + c) - lse);
                    dl.setFloat(base + c, t < 0 ? 0f : (float) (o.gradScale() * (p - (c == t ? 1 : 0))));
                }
            }
        }
    }

    private static void sumSquares(Op.SumSquares o) {
        HostBuffer x = h(o.x());
        double s = 0;
        for (long i = 0; i < x.elements(); i++) s += (double) x.getFloat(i) * x.getFloat(i);
        h(o.out()).setFloat(0, (float) s);
    }

    private static void adamw(Op.AdamW o) {
        HostBuffer p = h(o.param()), g = h(o.grad()), m = h(o.m()), v = h(o.v());
        double bc1 = 1 - Math.pow(o.beta1(), o.step()), bc2 = 1 - Math.pow(o.beta2(), o.step());
        for (long i = 0; i < p.elements(); i++) {
            double grad = (double) g.getFloat(i) * o.gradScale();
            double pv = p.getFloat(i) * (1 - (double) o.lr() * o.weightDecay());
            double mv = o.beta1() * (double) m.getFloat(i) + (1 - (double) o.beta1()) * grad;
            double vv = o.beta2() * (double) v.getFloat(i) + (1 - (double) o.beta2()) * grad * grad;
            pv -= o.lr() * (mv / bc1) / (Math.sqrt(vv / bc2) + o.eps());
            p.setFloat(i, (float) pv);
            m.setFloat(i, (float) mv);
            v.setFloat(i, (float) vv);
        }
    }
}
