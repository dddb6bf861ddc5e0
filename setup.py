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
    """The CUDA toolkit's root: CUDA_HOME / CUDA_PATH, else /usr/local/cuda, else the toolkit of the
    nvcc on PATH, asked where it really lives (/usr/local/bin/nvcc may be a wrapper script)."""
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if env and os.path.exists(os.path.join(env, "bin", "nvcc")):
        return env
    if env:
        _log(f"CUDA_HOME={env} has no bin/nvcc; looking elsewhere")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    import shutil
    import subprocess
    import tempfile

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    # nvcc --dryrun prints its own bin directory (_HERE_), wrapper or not
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.cu")
        open(probe, "w").close()
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", probe, "-o", os.devnull], capture_output=True, text=True,
                                 timeout=60)
            for line in (out.stdout + out.stderr).splitlines():
                if line.startswith("#$ _HERE_="):
                    home = os.path.dirname(line.split("=", 1)[1].strip())
                    if os.path.exists(os.path.join(home, "bin", "nvcc")):
                        return home
        except (OSError, subprocess.SubprocessError):
            pass
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        return home
    return None


# What was built or skipped and why: printed at the end of the build and written next to the
# extensions (tks_kernels/_build_info.json), where tks_kernels._ext reads it to explain a missing one.
BUILD_INFO = {"cpp": {"built": False, "why": "not attempted"}, "cuda": {"built": False, "why": "not attempted"}}
EXT_KIND = {"tks_kernels._C": "cpp", "tks_kernels._C_cuda": "cuda"}


def build_extensions():
    """(ext_modules, cmdclass) for the compiled kernels in csrc/.

    - ``tks_kernels._C``: every ``csrc/**/*.cpp`` that is not ``*_cuda.cpp``; always built.
    - ``tks_kernels._C_cuda``: ``csrc/**/*.cu`` and ``csrc/**/*_cuda.cpp``; built when a CUDA
      toolkit is found and torch has CUDA, GPU present or not. A failed CUDA build is reported and
      skipped (the CPU install still completes) unless TKS_FORCE_CUDA_BUILD=1.
    Flags: TKS_SKIP_CUDA_BUILD=1, TKS_FORCE_CUDA_BUILD=1, TKS_CUDA_ARCHS="8.0;9.0+PTX" (the default
    without a visible GPU; with one, its own arch), MAX_JOBS (parallel compile jobs).
    """
    import glob
    import json

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
    force_cuda = os.environ.get("TKS_FORCE_CUDA_BUILD", "0") == "1"
    # No contraction into FMA: the kernels must round exactly as the eager reference does.
    # -fno-trapping-math lets GCC vectorise loops with selects (values unchanged: it only stops the
    # compiler from preserving floating-point exception flags).
    # No -std: torch's BuildExtension adds the C++ standard its headers need (17 or 20).
    cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
    ext_modules = []
    if cpu_sources:
        ext_modules.append(cpp_extension.CppExtension(
            "tks_kernels._C", cpu_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"],
        ))
        BUILD_INFO["cpp"] = {"built": False, "why": "C++ CPU kernels, always built"}
    else:
        BUILD_INFO["cpp"]["why"] = "no C++ sources in csrc/"

    def skip_cuda(why):
        BUILD_INFO["cuda"]["why"] = why
        if force_cuda:
            raise RuntimeError(f"TKS_FORCE_CUDA_BUILD=1 but the CUDA extension cannot be built: {why}")

    if not cuda_sources:
        skip_cuda("no CUDA sources in csrc/")
    elif os.environ.get("TKS_SKIP_CUDA_BUILD", "0") == "1":
        skip_cuda("TKS_SKIP_CUDA_BUILD=1")
    elif torch.version.cuda is None:
        skip_cuda(f"this torch ({torch.__version__}) is a CPU-only build")
    else:
        cuda_home = _find_cuda_home()
        if cuda_home is None:
            skip_cuda("no CUDA toolkit (nvcc) found; install one or set CUDA_HOME")
        else:
            os.environ["CUDA_HOME"] = cuda_home
            cpp_extension.CUDA_HOME = cuda_home  # torch guessed at import time; correct it
            archs = os.environ.get("TKS_CUDA_ARCHS")
            if archs:
                os.environ["TORCH_CUDA_ARCH_LIST"] = archs
            elif not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"  # A100 and H100 SASS, PTX for newer GPUs
            ext_modules.append(cpp_extension.CUDAExtension(
                "tks_kernels._C_cuda", cuda_sources, include_dirs=include_dirs,
                # --fmad=false: no FMA contraction (exact rounding); IEEE division is nvcc's default
                extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--fmad=false"]},
            ))
            arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "the visible GPU's")
            BUILD_INFO["cuda"] = {"built": False, "why": f"CUDA kernels, with CUDA {cuda_home}, archs {arch_list}"}
    _log(f"torch {torch.__version__} (CUDA {torch.version.cuda}); MAX_JOBS={os.environ.get('MAX_JOBS', 'all cores')}")
    planned = {EXT_KIND[e.name] for e in ext_modules}
    for module, kind in EXT_KIND.items():
        _log(f"{module}: {'will build' if kind in planned else 'skipped'}: {BUILD_INFO[kind]['why']}")
    if not ext_modules:
        return [], {}

    class BuildExt(cpp_extension.BuildExtension):
        """Reports each extension's outcome; a failed CUDA extension is skipped, not fatal, unless
        TKS_FORCE_CUDA_BUILD=1 (the CPU kernels still install)."""

        def build_extensions(self):
            # torch checks nvcc against torch.version.cuda for all extensions at once, before any is
            # built: a mismatch must not stop the CPU extension
            cuda = [e for e in self.extensions if EXT_KIND.get(e.name) == "cuda"]
            if cuda and not force_cuda:
                try:
                    cpp_extension._check_cuda_version(*self._check_abi())
                except AttributeError:
                    pass  # torch's private helpers moved: it checks as usual below
                except Exception as err:  # noqa: BLE001
                    BUILD_INFO["cuda"] = {"built": False, "why": f"nvcc does not fit this torch: {err}"}
                    _log(f"cuda: {BUILD_INFO['cuda']['why']}")
                    self.extensions = [e for e in self.extensions if e not in cuda]
            super().build_extensions()

        def build_extension(self, ext):
            kind = EXT_KIND.get(ext.name)
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - torch raises RuntimeError for compiler errors
                if kind != "cuda" or force_cuda:
                    raise
                BUILD_INFO["cuda"] = {"built": False, "why": f"the CUDA build failed: {str(err).splitlines()[0]}"}
                _log(f"cuda: {BUILD_INFO['cuda']['why']} (set TKS_FORCE_CUDA_BUILD=1 to stop on it)")
                return
            if kind:
                BUILD_INFO[kind]["built"] = True

        def run(self):
            super().run()
            info = dict(BUILD_INFO, torch=torch.__version__)
            out_dir = os.path.dirname(self.get_ext_fullpath("tks_kernels._C"))
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "_build_info.json"), "w") as f:
                json.dump(info, f, indent=1)
            for module, kind in EXT_KIND.items():
                _log(f"{module}: {'built' if BUILD_INFO[kind]['built'] else 'skipped'}: {BUILD_INFO[kind]['why']}")

    return ext_modules, {"build_ext": BuildExt.with_options(use_ninja=True)}


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
    package_data={"tks": ["data/*.npz"], "tks_kernels": ["_build_info.json"]},
    install_requires=["torch>=2.6", "numpy"],
    extras_require={
        "test": ["pytest", "numpy", "spikingjelly==2.0.0"],
        "train": ["torchvision", "tonic", "aedat", "tqdm", "matplotlib", "scikit-learn", "scipy"],
    },
    entry_points={"console_scripts": ["tks-train = tks.train:main", "tks-eval = tks.eval:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
