from setuptools import setup

setup(
    name="wavegen",
    version="0.1.0",
    description="Raw-audio neural synthesis: SampleRNN and WaveNet, trained on your recordings, rendered fast",
    python_requires=">=3.10",
    packages=["wavegen", "wavegen.cli", "wavegen.models", "wavegen.render", "wavegen.kernels", "wavegen.kernels.cuda",
              "wavegen.serve"],
    package_dir={"wavegen.kernels": "kernels"},
    package_data={"wavegen.kernels": ["cuda/*.cu", "cuda/*.cpp", "cuda/*.h"], "wavegen.serve": ["static/*"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "soundfile>=0.12",
        "soxr>=0.3",
        "numba>=0.59",
        "accelerate>=0.30",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "aiohttp>=3.9",  # wavegen serve
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-xdist>=3.5", "matplotlib>=3.7", "playwright>=1.40"],  # playwright: the serve page's browser test
        "plot": ["matplotlib>=3.7"],
        # wavegen eval --renders (wavegen.analysis): librosa features, scipy's sqrtm, the plot
        "analysis": ["librosa>=0.10", "scipy>=1.10", "matplotlib>=3.7"],
        # the cuda backend (numba-cuda kernels; Triton comes with torch) and its CPU tests
        # (greenlet: tests/cudasim.py). CUDA pinned to 13.0: newer emits PTX that ptxas 13.0 rejects.
        # numpy < 2.5: numba-cuda 0.30 fails at its first kernel compile on numpy 2.5 (np.row_stack).
        "cuda": ["numba-cuda[cu13]>=0.30", "cuda-toolkit[cccl,cudart,nvrtc,nvvm]==13.0.*",
                 "nvidia-nvjitlink==13.0.*", "greenlet>=3", "numpy<2.5"],
    },
    entry_points={"console_scripts": ["wavegen=wavegen.cli:run"]},
)
