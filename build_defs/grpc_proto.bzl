"""grpc_cc_proto_library: protoc + grpc_cpp_plugin from Debian's packages, as a cc_library."""

def grpc_cc_proto_library(name, src, deps = [], grpc = True, visibility = None):
    """Generates C++ message (and, with grpc, service) code for one .proto file.

    Args:
      name: the cc_library's name.
      src: the .proto file, in this package.
      deps: other grpc_cc_proto_library targets whose .proto files src imports.
      grpc: whether to generate the service stubs too.
      visibility: as for cc_library.
    """
    stem = src[:-len(".proto")]
    outs = [stem + ".pb.h", stem + ".pb.cc"]
    plugin = ""
    if grpc:
        outs += [stem + ".grpc.pb.h", stem + ".grpc.pb.cc"]
        plugin = " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    native.genrule(
        name = name + "_codegen",
        srcs = [src] + [d + "_proto_sources" for d in deps],
        outs = outs,
        cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR)" + plugin +
              " $(location " + src + ")",
        visibility = ["//visibility:private"],
    )
    native.filegroup(
        name = name + "_proto_sources",
        srcs = [src],
        visibility = visibility,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + [
            "//third_party:grpc" if grpc else "//third_party:protobuf",
        ],
        visibility = visibility,
    )
