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

Retraining with a BER curriculum, tolerance characterization, DRAM mapping and their CLIs are
still to come (see the project issues).
"""
