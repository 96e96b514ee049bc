package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.util.Map;

/**
 * One conformance case: an op family at one shape, with its tolerance, a generator of fresh random inputs and a
 * factory that builds the op record on a {@link Harness}. The same inputs are run on the reference and on the backend
 * under test, and every output ({@link Op#outputs()}) is compared.
 *
 * @param op        the op family, the simple name of the {@link Op} record (e.g. "MatMul")
 * @param shape     a short label of the shape parameters (e.g. "M=7 N=13 K=37 a·bᵀ +=")
 * @param dtype     the element type the case exercises (the support matrix's dtype column)
 * @param tolerance the largest NMSE that passes (see {@link Tolerance})
 * @param inputs    makes the named host inputs from a generator keyed by the seed and this case
 * @param factory   allocates the buffers through the harness and builds the op
 */
public record OpCase(String op, String shape, DType dtype, double tolerance, Inputs inputs, OpFactory factory) {

    /** Fresh inputs, realistic for the op; may run forward ops on the reference (e.g. rstd for norm backward). */
    @FunctionalInterface
    public interface Inputs {
        Map<String, HostArray> generate(Rng rng, Backend reference);
    }

    /** Builds the op with buffers from the harness (which allocates them on the backend at hand). */
    @FunctionalInterface
    public interface OpFactory {
        Op build(Harness h);
    }

    /** "op dtype shape", unique within a suite. */
    public String id() {
        return op + " " + dtype + " " + shape;
    }

    /** The inputs for this seed: a pure function of (seed, case id). */
    public Map<String, HostArray> generate(long seed, Backend reference) {
        return inputs.generate(Rng.keyed(seed, Rng.key(id())), reference);
    }

    /** Allocates the buffers on {@code backend}, builds and runs the op, and reads back all outputs. */
    public Execution run(Backend backend, Map<String, HostArray> inputs) {
        return Harness.execute(backend, inputs, factory);
    }
}
