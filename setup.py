"""mathft-jax: fine-tuning open decoder LLMs for competition math (Liu et al. 2023) in JAX."""
import setuptools

# Versions are bounded to the minor releases the test suite runs against: JAX, Flax and Orbax move fast.
CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "gin-config>=0.5.0",
    "numpy>=2.0",
    "safetensors>=0.8.0",
    "sympy>=1.14",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "latex2sympy2_extended>=1.11,<2",  # LaTeX -> sympy through an ANTLR grammar: never evals the text
]
DATA = [
    "seqio>=0.0.20",
    "tensorflow-datasets>=4.9.10",
    "importlib_resources",  # needed by tensorflow-datasets builders, not declared by it
    "tokenizers>=0.23",
    "sentencepiece>=0.2.0",
    "clu>=0.0.12",
    "tensorboard>=2.20",  # clu's SummaryWriter
]
TEST = [
    # torch must be the CPU wheel on disk: `make` installs torch==2.13.0 before this list.
    "torch==2.13.0",
    "transformers>=5.24,<6",
    "pytest>=9.0",
    "math-verify>=0.9",  # the peer in benchmarks/grading_throughput.py
]

setuptools.setup(
    name="mathft_jax",
    version="0.1.0",
    description="Solution, evaluator and multi-task sequential fine-tuning of decoder LLMs for MATH, in JAX.",
    packages=setuptools.find_packages(include=["mathft_jax", "mathft_jax.*"]),
    package_data={"mathft_jax": ["data/*.txt"]},
    python_requires=">=3.10",
    install_requires=CORE + DATA,
    extras_require={"test": TEST},
    entry_points={
        "console_scripts": [
            "mathft-import-hf=mathft_jax.models.hf_import:main",
            "mathft-export-hf=mathft_jax.models.hf_export:main",
            "mathft-train=mathft_jax.training.train:main",
            "mathft-infer=mathft_jax.inference.infer:main",
            "mathft-rerank=mathft_jax.reranking.rerank:main",
            "mathft-recipe=mathft_jax.recipe:main",
            "mathft-prepare-data=mathft_jax.data.prepare:main",
            "mathft-demo=mathft_jax.demo:main",
        ],
    },
)
