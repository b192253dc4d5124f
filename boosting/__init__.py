"""Error-tolerance boosting of neural networks on approximate DRAM (EDEN's second and third stages).

Present:

- :mod:`boosting.networks`: network registry (``lenet``, ``vgg-small``, ``resnet8``, ``resnet20``;
  any ``torch.nn.Module``), seeded initialisation.
- :mod:`boosting.data`: datasets (scikit-learn's digits offline; MNIST and CIFAR-10 from a local
  directory in their standard formats; user tensors).
- :mod:`boosting.quant`: FP32 and symmetric linear int16 / int8 / int4 quantization holding the
  integers that sit in DRAM, and a straight-through fake-quant for retraining.
- :mod:`boosting.inference`: error-injecting inference (weights and input feature maps stored
  in the chosen format, corrupted by an error model, mitigated), gradients to the clean
  weights, accuracy over error seeds with a confidence interval.

- :mod:`boosting.retrain`: retraining ("boosting") with a BER curriculum, resumable checkpoints.
- :mod:`boosting.characterize`: coarse (Algorithm 2) and fine (Algorithm 3) tolerance
  characterization, evaluations submitted through a ``concurrent.futures`` executor.

DRAM mapping, the CLIs (``python -m boosting.train``, ``characterize``, ``map``) and the
benchmarks are still to come (see the project issues).
"""
