// Python module init of tks_kernels._C (the C++ CPU kernels). It defines no Python functions:
// importing the module runs the static TORCH_LIBRARY registrations of every csrc/**/*.cpp that is
// not *_cuda.cpp, and the ops are then torch.ops.tks.*. See csrc/README.md.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "tks-kernels C++ CPU ops (torch.ops.tks)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
