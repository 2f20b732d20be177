"""BLAS and LAPACK for numba kernels, through named external symbols (cacheable code).

numba exposes only np.dot and a few np.linalg routines; the kernels call the Fortran
routines of scipy.linalg.cython_blas / cython_lapack (the library numba's own bindings use)
through named external symbols, so their compiled code caches across processes. Each
binding takes its Fortran arguments in order, with every matrix as (flat float64 array,
element offset); a routine with ``info`` returns it.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

_LL = {"c": ir.IntType(8), "i": ir.IntType(32), "d": ir.DoubleType(), "a": ir.DoubleType()}
_NB = {"c": types.int8, "i": types.int32, "d": types.float64}


def _fortran(library: str, name: str, kinds: str):
    symbol = f"omlbayes_{name}"
    address = get_cython_function_address(f"scipy.linalg.cython_{library}", name)
    llvm_binding.add_symbol(symbol, address)
    has_info = kinds.endswith("!")
    kinds = kinds.rstrip("!")
    fnty = ir.FunctionType(
        ir.VoidType(),
        [_LL[k].as_pointer() for k in kinds] + ([ir.IntType(32).as_pointer()] if has_info else []),
    )

    def typer(typingctx, *args):
        def codegen(context, builder, signature, llargs):
            fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
            out, j = [], 0
            for k in kinds:
                if k == "a":
                    ary = context.make_array(signature.args[j])(context, builder, llargs[j])
                    off = context.cast(builder, llargs[j + 1], signature.args[j + 1], types.intp)
                    out.append(builder.gep(ary.data, [off]))
                    j += 2
                else:
                    v = context.cast(builder, llargs[j], signature.args[j], _NB[k])
                    out.append(cgutils.alloca_once_value(builder, v))
                    j += 1
            if has_info:
                info = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
                builder.call(fn, [*out, info])
                return builder.load(info)
            builder.call(fn, out)
            return context.get_dummy_value()

        return (types.int32 if has_info else types.void)(*args), codegen

    names = ", ".join(f"x{k}" for k in range(len(kinds) + kinds.count("a")))
    scope = {"typer": typer}
    exec(f"def {name}(typingctx, {names}):\n    return typer(typingctx, {names})", scope)  # noqa: S102
    return intrinsic(scope[name])


dpotrf = _fortran("lapack", "dpotrf", "ciai!")
dtrtri = _fortran("lapack", "dtrtri", "cciai!")
dlauum = _fortran("lapack", "dlauum", "ciai!")
dtrsm = _fortran("blas", "dtrsm", "cccciidaiai")
dtrmm = _fortran("blas", "dtrmm", "cccciidaiai")
dsyrk = _fortran("blas", "dsyrk", "cciidaidai")
dsymm = _fortran("blas", "dsymm", "cciidaiaidai")
dgemm = _fortran("blas", "dgemm", "cciiidaiaidai")
dpotrs = _fortran("lapack", "dpotrs", "ciiaiai!")
