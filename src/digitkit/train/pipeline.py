"""The batches `fit` reads from a decoded split (`digitkit.train.folder_data.Split`), and the
augmentation of general pictures: both in TensorFlow, both deterministic for a seed."""

from __future__ import annotations

import math

import numpy as np

from digitkit.train.folder_data import Split


def batches(split: Split, batch_size: int, seed: int, shuffle: bool, augment=None):
    """tf.data batches of (float32 (n, H, W, C) 0..255, int32 labels) read from the cache by
    index: reshuffling an epoch moves indices, never pictures. `augment(index, x)`: a
    per-batch transform of float32 batches."""
    import tensorflow as tf

    pixels, rows, n = split.pixels, split.rows, len(split)
    shape = (None, *pixels.shape[1:])
    labels = tf.constant(split.labels.astype(np.int32))
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).enumerate()

    def gather(i, idx):
        x = tf.numpy_function(lambda ix: pixels[rows[ix]], [idx], tf.uint8, stateful=False)
        x = tf.cast(tf.ensure_shape(x, shape), tf.float32)
        if augment is not None:
            x = augment(i, x)
        return x, tf.gather(labels, idx)

    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)


def image_augment(seed: int, flip: bool):
    """Random shifts (+-8 %), scaling (+-10 %), rotation (+-6 deg) and brightness (+-10 %),
    and with `flip` a mirror half the time: label-preserving for photos of things. Flips are
    off unless asked for: a mirrored digit, letter or text is another picture. Stateless
    random numbers seeded by (seed, batch index): parallel mapping stays deterministic."""
    import tensorflow as tf

    def augment(index, x):
        n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        s = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
        u = tf.random.stateless_uniform((n, 6), seed=s, minval=-1.0, maxval=1.0)
        angle = u[:, 0] * (6.0 * math.pi / 180.0)
        scale = 1.0 + 0.10 * u[:, 1]
        tx, ty = 0.08 * wf * u[:, 2], 0.08 * hf * u[:, 3]
        mirror = tf.where(u[:, 5] > 0, -1.0, 1.0) if flip else tf.ones_like(scale)
        cx, cy = (wf - 1.0) / 2.0, (hf - 1.0) / 2.0
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        # Output->input mapping about the centre, as ImageProjectiveTransformV3 wants.
        a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
        a2 = cx - a0 * cx - a1 * cy - tx
        b2 = cy - b0 * cx - b1 * cy - ty
        zeros = tf.zeros_like(a0)
        t = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=t, output_shape=tf.stack([h, w]), fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")
        bright = (1.0 + 0.10 * u[:, 4])[:, None, None, None]
        return tf.clip_by_value(out * bright, 0.0, 255.0)

    return augment


__all__ = ["batches", "image_augment"]
