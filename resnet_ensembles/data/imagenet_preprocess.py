"""ImageNet preprocessing with TensorFlow ops, one encoded image at a time (Inception-style, as in the TF/Flax
ImageNet examples): training takes a random crop of 8%-100% of the area with aspect ratio 3/4-4/3, resized to
image_size, and a random horizontal flip; evaluation resizes the central crop of side image_size / (image_size
+ CROP_PADDING) * min(h, w). Randomness is stateless (the caller passes the seed). JPEGs decode only their crop.
TensorFlow is imported lazily (`tf()`): the models and configs never need it.
"""
from __future__ import annotations

import functools

CROP_PADDING = 32


@functools.lru_cache(maxsize=None)
def tf_module():
  import tensorflow as tf  # lazy: only the input pipeline needs TensorFlow
  try:
    tf.config.set_visible_devices([], "GPU")  # the accelerators belong to JAX
  except RuntimeError:
    pass  # already initialised
  return tf


def _shape(image_bytes):
  tf = tf_module()
  return tf.cond(tf.io.is_jpeg(image_bytes), lambda: tf.image.extract_jpeg_shape(image_bytes),
                 lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False)))


def _decode_crop(image_bytes, window):
  """Decodes only the crop [y, x, h, w] of a JPEG (any other format: decode, then crop)."""
  tf = tf_module()
  return tf.cond(
      tf.io.is_jpeg(image_bytes), lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
      lambda: tf.image.crop_to_bounding_box(tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
                                            window[0], window[1], window[2], window[3]))


def _resize(image, image_size: int):
  tf = tf_module()
  image = tf.image.resize(image, [image_size, image_size], method="bicubic")
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def preprocess_train(image_bytes, seed, image_size: int = 224):
  """Random-resized crop + flip of one encoded image -> uint8 [image_size, image_size, 3]."""
  tf = tf_module()
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      _shape(image_bytes), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed, min_object_covered=0.1,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)  # after 10 failed attempts: the whole image
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = _resize(_decode_crop(image_bytes, window), image_size)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def preprocess_eval(image_bytes, image_size: int = 224):
  """Central crop (padded by CROP_PADDING), resized -> uint8 [image_size, image_size, 3]."""
  tf = tf_module()
  shape = _shape(image_bytes)
  h, w = shape[0], shape[1]
  side = tf.cast(image_size / (image_size + CROP_PADDING) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  window = tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])
  return _resize(_decode_crop(image_bytes, window), image_size)
