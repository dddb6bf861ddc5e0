"""Build and install tks-kernels (package ``tks_kernels``) and its model layer (package ``tks``).

The compiled extensions in csrc/ are built by ``build_extensions()`` below. Install with
``pip install --no-build-isolation -e .`` so the build uses the torch already installed.
"""
import os
import sys

from setuptools import find_packages, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_extensions():
    """(ext_modules, cmdclass). The C++/CUDA extensions come with the csrc issue."""
    return [], {}


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
