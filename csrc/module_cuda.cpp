// Python module init of tks_kernels._C_cuda (the CUDA kernels). It defines no Python functions:
// importing the module runs the static TORCH_LIBRARY_IMPL(tks, CUDA, ...) registrations of
// csrc/**/*_cuda.cpp; tks_kernels._C (the schemas) is imported first. See csrc/README.md.
#include <Python.h>

PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", "tks-kernels CUDA ops (torch.ops.tks)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
