"""cuda_library: compiles .cu files with the toolkit's nvcc and wraps the objects.

Every .cu file becomes one object, built for Hopper: sm_90a machine code (so wgmma and
setmaxnreg are available) plus compute_90 PTX so newer cards can JIT it. Headers come from
`hdrs` and from the CcInfo of `deps`, so a kernel includes project headers (for example the
KV layout in kv_cache/) exactly as C++ code does.
"""

_NVCC = "/usr/local/cuda/bin/nvcc"

_NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-lineinfo",
    "--expt-relaxed-constexpr",
    "-Xcompiler",
    "-fPIC",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_90,code=compute_90",
]

def _cuda_objects_impl(ctx):
    contexts = [dep[CcInfo].compilation_context for dep in ctx.attr.deps]
    headers = depset(
        ctx.files.hdrs,
        transitive = [c.headers for c in contexts],
    )
    include_dirs = depset(
        [".", ctx.bin_dir.path],
        transitive = [c.includes for c in contexts] +
                     [c.quote_includes for c in contexts] +
                     [c.system_includes for c in contexts],
    )
    defines = depset(transitive = [c.defines for c in contexts])
    objects = []
    for src in ctx.files.srcs:
        stem = src.basename[:-len(src.extension) - 1]
        obj = ctx.actions.declare_file("_cuda_objs/%s/%s.o" % (ctx.label.name, stem))
        args = ctx.actions.args()
        args.add_all(_NVCC_FLAGS)
        args.add_all(ctx.attr.copts)
        args.add_all(include_dirs, before_each = "-I")
        args.add_all(defines, format_each = "-D%s")
        args.add_all(["-c", src.path, "-o", obj.path])
        ctx.actions.run(
            executable = _NVCC,
            arguments = [args],
            inputs = depset([src], transitive = [headers]),
            outputs = [obj],
            mnemonic = "Nvcc",
            progress_message = "nvcc %s" % src.short_path,
            use_default_shell_env = True,
        )
        objects.append(obj)
    return [DefaultInfo(files = depset(objects))]

_cuda_objects = rule(
    implementation = _cuda_objects_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "hdrs": attr.label_list(allow_files = [".h", ".cuh"]),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
    },
)

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], visibility = None, **kwargs):
    """A cc_library whose sources are .cu files compiled by nvcc.

    Args:
      name: the cc_library's name.
      srcs: .cu files; each becomes one object.
      hdrs: headers this library exports (also visible to its .cu files).
      deps: cc_library targets whose headers the .cu files include and whose code they use.
      copts: extra nvcc flags.
      visibility: as for cc_library.
      **kwargs: passed to the cc_library (tags, testonly, ...).
    """
    _cuda_objects(
        name = name + "_cuda_objects",
        srcs = srcs,
        hdrs = hdrs,
        deps = deps + ["//third_party:cuda_headers"],
        copts = copts,
        visibility = ["//visibility:private"],
        testonly = kwargs.get("testonly", False),
    )
    native.cc_library(
        name = name,
        srcs = [":" + name + "_cuda_objects"],
        hdrs = hdrs,
        deps = deps + ["//third_party:cudart"],
        alwayslink = True,
        visibility = visibility,
        **kwargs
    )
