"""Error-tolerance boosting of neural networks on approximate DRAM (EDEN's second and third stages).

Present:

- :mod:`boosting.networks`: network registry (``lenet``, ``vgg-small``, ``resnet8``, ``resnet20``;
  any ``torch.nn.Module``), seeded initialisation.
- :mod:`boosting.data`: datasets (scikit-learn's digits offline; MNIST and CIFAR-10 from a local
  directory in their standard formats; user tensors).
- :mod:`boosting.quant`: FP32 and symmetric linear int16 / int8 / int4 quantization holding the
  integers that sit in DRAM, and a straight-through fake-quant for retraining.

Error-injecting inference, retraining, characterization and DRAM mapping are still to come
(see the project issues).
"""
