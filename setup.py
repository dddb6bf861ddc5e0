"""Build and install tks-kernels (package ``tks_kernels``) and its model layer (package ``tks``).

The compiled extensions in csrc/ are built by ``build_extensions()`` below. Install with
``pip install --no-build-isolation -e .`` so the build uses the torch already installed.
"""
import os
import sys

from setuptools import find_packages, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


HERE = os.path.dirname(os.path.abspath(__file__))


def _log(msg):
    print(f"[tks-kernels setup] {msg}", file=sys.stderr)


def _find_cuda_home():
    """CUDA_HOME from the environment, else from the real nvcc (/usr/local/bin/nvcc may be a wrapper)."""
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if env and os.path.exists(os.path.join(env, "bin", "nvcc")):
        return env
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    import shutil

    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        home = os.path.dirname(os.path.dirname(real))
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def build_extensions():
    """(ext_modules, cmdclass) for the compiled kernels in csrc/.

    - ``tks_kernels._C``: every ``csrc/**/*.cpp`` that is not ``*_cuda.cpp``; always built.
    - ``tks_kernels._C_cuda``: ``csrc/**/*.cu`` and ``csrc/**/*_cuda.cpp``; built when a CUDA
      toolkit is found and torch has CUDA, GPU present or not.
    Flags: TKS_SKIP_CUDA_BUILD=1, TKS_CUDA_ARCHS="8.0;9.0+PTX" (default without a visible GPU),
    MAX_JOBS.
    """
    import glob

    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _log("torch is not installed: install it first, then pip install --no-build-isolation -e .")
        raise

    def sources(pattern):
        return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "**", pattern), recursive=True))

    cpu_sources = [p for p in sources("*.cpp") if not p.endswith("_cuda.cpp")]
    cuda_sources = sources("*.cu") + sources("*_cuda.cpp")
    include_dirs = [os.path.join(HERE, "csrc")]
    # No contraction into FMA: the kernels must round exactly as the eager reference does.
    # No -std: torch's BuildExtension adds the standard its headers need (C++17 up to torch 2.9,
    # C++20 from 2.10 on).
    # -fno-trapping-math lets GCC vectorise loops with selects (values unchanged: it only stops the
    # compiler from preserving floating-point exception flags).
    cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
    ext_modules, built, skipped = [], [], []
    if cpu_sources:
        ext_modules.append(cpp_extension.CppExtension(
            "tks_kernels._C", cpu_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"],
        ))
        built.append("tks_kernels._C (C++ CPU kernels)")

    if not cuda_sources:
        skipped.append("tks_kernels._C_cuda: no CUDA sources")
    elif os.environ.get("TKS_SKIP_CUDA_BUILD", "0") == "1":
        skipped.append("tks_kernels._C_cuda: TKS_SKIP_CUDA_BUILD=1")
    elif torch.version.cuda is None:
        skipped.append(f"tks_kernels._C_cuda: this torch ({torch.__version__}) is a CPU-only build")
    else:
        cuda_home = _find_cuda_home()
        if cuda_home is None:
            skipped.append("tks_kernels._C_cuda: no CUDA toolkit (nvcc) found; set CUDA_HOME")
        else:
            os.environ["CUDA_HOME"] = cuda_home
            cpp_extension.CUDA_HOME = cuda_home  # torch guessed at import time; correct it
            archs = os.environ.get("TKS_CUDA_ARCHS")
            if archs:
                os.environ["TORCH_CUDA_ARCH_LIST"] = archs
            elif not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
            ext_modules.append(cpp_extension.CUDAExtension(
                "tks_kernels._C_cuda", cuda_sources, include_dirs=include_dirs,
                extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--fmad=false"]},
            ))
            built.append(f"tks_kernels._C_cuda (CUDA {cuda_home}, archs {os.environ.get('TORCH_CUDA_ARCH_LIST', 'of the visible GPU')})")
    for line in built:
        _log(f"building {line}")
    for line in skipped:
        _log(f"skipping {line}")
    if not ext_modules:
        return [], {}
    return ext_modules, {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = build_extensions()

setup(
    name="tks-kernels",
    version="0.1.0",
    description="Fused GPU kernels for spiking neural networks and the Temporal Knowledge Sharing (TKS) loss",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tks_kernels", "tks_kernels.*"]) + find_packages("python"),
    package_dir={"tks": "python/tks"},
    package_data={"tks": ["data/*.npz"]},
    install_requires=["torch>=2.6", "numpy"],
    extras_require={
        "test": ["pytest", "numpy", "spikingjelly==2.0.0"],
        "train": ["torchvision", "tonic", "tqdm", "matplotlib", "scikit-learn"],
    },
    entry_points={"console_scripts": []},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
