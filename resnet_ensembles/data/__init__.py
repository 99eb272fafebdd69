"""Images: CIFAR-10 from an image folder or TFDS, decoded once into uint8 arrays and augmented on device
(`cifar10`); ImageNet streamed per process (`imagenet`, its preprocessing `imagenet_preprocess`); what a run
reads and how its data is named in results (`for_run`). Imports only `utils`; the models know nothing of it."""
