"""Fast Threefry random numbers on the CPU, bit-identical to stock JAX.

JAX lowers the Threefry-2x32 hash to a rolled `fori_loop` of five iterations on the CPU (to shorten
compilation), but to straight-line code on GPUs and TPUs. XLA's CPU runtime pays a fixed cost per loop
iteration and per kernel, so at small network sizes every `jax.random` call inside the training scan
costs more than the matmuls around it (tests/test_compilation.py checks that the loops are gone).
`use_unrolled_threefry_on_cpu` registers JAX's own straight-line lowering
for the CPU too: the same hash, so every key, split and sample is unchanged (tests/test_compilation.py compares
against stock JAX in a fresh process); only the compiled program is faster.

The entry points (`main.train`, the experiments, the tests' conftest) call it before they trace
anything; importing a module of the library changes nothing. It uses two private JAX names, which the pinned
JAX has (tests/test_compilation.py fails on any other JAX version, so an upgrade re-checks this module); where
they are missing it warns and leaves JAX's default in place.
"""

import warnings


def use_unrolled_threefry_on_cpu() -> bool:
    """Registers the unrolled Threefry lowering for the CPU (idempotent); returns whether it is in place."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32

        mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule, platform='cpu')
    except (ImportError, AttributeError) as error:  # a JAX version without these internals
        warnings.warn(f'Could not unroll Threefry on the CPU ({error}); random numbers are unchanged but slower.')
        return False
    return True
