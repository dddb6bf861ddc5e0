// TEMPORARY (branch tksloss): the Python module init of tks_kernels._C, so the extension imports
// while the shared init (csrc/module_cpu.cpp, branch csrc) has not landed. Delete this file when
// merging that one: two PyInit__C symbols do not link. The ops register themselves through
// TORCH_LIBRARY_FRAGMENT when the library loads; the module itself is empty.
#include <Python.h>

static struct PyModuleDef tks_kernels_C_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&tks_kernels_C_module); }
