"""digitkit.preprocess: the MNIST convention from any image, and bad files as ImageError."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from _onnx_model import build_linear_model, predict_numpy
from digitkit.errors import ImageError
from digitkit.preprocess import MAX_PIXELS, load_image, load_images, to_mnist


@pytest.fixture(scope="module")
def linear(mnist_dir, tmp_path_factory):
    _, w, b = build_linear_model(mnist_dir, tmp_path_factory.mktemp("linear"))
    return w, b


def test_whole_png_test_folder_is_bit_for_bit_the_idx_arrays(png_test_dir, mnist_test):
    x, y = mnist_test
    seen = 0
    for label_dir in sorted(png_test_dir.iterdir()):
        for f in label_dir.iterdir():
            i = int(f.stem) - 60000  # the shared folder numbers test images after the 60k train
            got = load_image(f)
            assert got.dtype == np.uint8 and got.shape == (28, 28)
            assert np.array_equal(got, x[i]), f
            assert int(label_dir.name) == y[i]
            seen += 1
    assert seen == 10000


@pytest.mark.parametrize("variant", ["inverted", "rgb", "rgba_opaque", "palette", "16bit", "LA"])
def test_convention_sized_variants_come_back_exactly(variant, mnist_test, tmp_path):
    x, _ = mnist_test
    for i in range(25):
        d = x[i]
        im = _convention_variant(variant, d)
        path = tmp_path / f"{i}.png"
        im.save(path)
        assert np.array_equal(load_image(path), d), (variant, i)


def _convention_variant(variant: str, d: np.ndarray) -> Image.Image:
    if variant == "inverted":
        return Image.fromarray(255 - d)
    if variant == "16bit":
        return Image.fromarray(d.astype(np.uint16) * 257)
    mode = {"rgb": "RGB", "rgba_opaque": "RGBA", "palette": "P", "LA": "LA"}[variant]
    return Image.fromarray(d).convert(mode)


def _real_world_variants(d: np.ndarray, rng) -> dict:
    """The kinds of images the issue lists, made from one MNIST digit with Pillow."""
    big = Image.fromarray(d).resize((280, 280), Image.Resampling.BICUBIC)
    b = np.asarray(big)
    paper = np.clip(205 - 0.7 * b + rng.normal(0, 6, b.shape), 0, 255).astype(np.uint8)
    canvas = Image.new("L", (640, 480), 0)
    canvas.paste(big, (int(rng.integers(0, 360)), int(rng.integers(0, 200))))
    strokes = Image.fromarray(np.full(b.shape, 20, np.uint8))
    return {
        "phone.jpg": (Image.fromarray(paper).convert("RGB"), {"quality": 75}),
        "scan.tiff": (Image.fromarray(paper), {}),
        "canvas_black_ink.png": (Image.merge("RGBA", [strokes] * 3 + [big]), {}),
        "canvas_white_ink.webp": (Image.merge("RGBA", [Image.new("L", b.shape, 250)] * 3 + [big]),
                                  {"lossless": True}),
        "inverted_big.bmp": (Image.fromarray(255 - b), {}),
        "off_centre.gif": (canvas, {}),
        "huge_16bit.png": (Image.fromarray(b.astype(np.uint16) * 257).resize((1200, 1200)), {}),
        "palette.png": (Image.fromarray(paper).convert("P"), {}),
    }


def test_real_world_images_are_classified_like_the_original(mnist_test, linear, tmp_path):
    x, y = mnist_test
    w, b = linear
    rng = np.random.default_rng(0)
    n = 40
    outs: dict[str, list] = {}
    for i in range(n):
        for name, (im, kw) in _real_world_variants(x[i], rng).items():
            path = tmp_path / f"{i}_{name}"
            im.save(path, **kw)
            a = load_image(path)
            assert a.dtype == np.uint8 and a.shape == (28, 28)
            rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
            assert rows[-1] - rows[0] < 20 and cols[-1] - cols[0] < 20  # the 20x20 box
            mass = a.astype(float) / a.sum()
            cy, cx = mass.sum(1) @ np.arange(28), mass.sum(0) @ np.arange(28)
            assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (name, cy, cx)  # centred
            outs.setdefault(name, []).append(a)
    original = predict_numpy(w, b, x[:n])
    for name, arrays in outs.items():
        got = predict_numpy(w, b, np.stack(arrays))
        # A linear model is shift-sensitive: a 1-pixel difference in centring can flip a
        # doubtful digit. Most must agree, and accuracy must not drop.
        assert (got == original).mean() >= 0.8, name
        assert (got == y[:n]).mean() >= (original == y[:n]).mean() - 0.1, name


def test_polarity_rule_inverts_dark_ink_on_light_paper():
    a = np.full((100, 80), 230, np.uint8)
    a[30:70, 35:45] = 40  # a dark bar: a "1"
    out = to_mnist(Image.fromarray(a))
    assert out[0, 0] == 0 and out.max() == 255
    assert to_mnist(Image.fromarray(255 - a)).tolist() == out.tolist()


def test_blank_images_give_blank_arrays():
    for value in (0, 255, 128):
        assert not to_mnist(Image.new("L", (50, 40), value)).any()


def test_tiny_and_odd_modes_do_not_crash():
    for im in (Image.new("1", (5, 5), 1), Image.new("CMYK", (40, 40)), Image.new("L", (1, 1)),
               Image.new("F", (30, 30), 0.5), Image.new("I", (30, 30), 40000)):
        assert to_mnist(im).shape == (28, 28)


def test_exif_orientation_is_applied(mnist_test, tmp_path):
    d = mnist_test[0][0]
    big = Image.fromarray(255 - d).resize((280, 280)).convert("RGB")
    upright = load_image(_save(big, tmp_path / "upright.jpg"))
    rotated = big.transpose(Image.Transpose.ROTATE_90)  # how the sensor stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    got = load_image(tmp_path / "rotated.jpg")
    assert np.abs(got.astype(int) - upright.astype(int)).mean() < 8


def _save(im, path, **kw):
    im.save(path, **kw)
    return path


def test_bad_files_raise_image_error_with_reason(tmp_path, mnist_test):
    good = tmp_path / "good.png"
    Image.fromarray(mnist_test[0][0]).resize((200, 200)).save(good)
    data = good.read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    side = int(MAX_PIXELS**0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # a few kB that claim > 50 MP
    (tmp_path / "dir.png").mkdir()
    expect = {
        "empty.png": "empty file",
        "truncated.png": "truncated",
        "text.png": "not an image",
        "bomb.png": "decompression bomb",
        "dir.png": "directory",
        "missing.png": "no such file",
    }
    for name, reason in expect.items():
        with pytest.raises(ImageError) as e:
            load_image(tmp_path / name)
        assert reason in e.value.reason, (name, e.value.reason)
        assert e.value.path == str(tmp_path / name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files anyway")
def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.png"
    Image.new("L", (28, 28)).save(p)
    p.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        load_image(p)


def test_load_images_in_bulk_equals_load_image_one_by_one(mnist_test, tmp_path):
    x, _ = mnist_test
    paths = []
    for i in range(12):
        d = x[i]
        if i % 4 == 1:
            d = 255 - d  # inverted, 28x28
        elif i % 4 == 2:
            d = np.roll(d, (6, -5), axis=(0, 1))  # off-centre, 28x28
        elif i % 4 == 3:
            d = np.asarray(Image.fromarray(d).resize((90, 90)))
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(d).save(paths[-1])
    paths.insert(5, tmp_path / "missing.png")
    (tmp_path / "blank.png").write_bytes(b"")
    paths.append(tmp_path / "blank.png")
    pixels, reasons = load_images(paths)
    assert reasons[5] == "no such file" and reasons[-1] == "empty file"
    assert sum(1 for r in reasons if r) == 2
    good = [p for p, r in zip(paths, reasons, strict=True) if not r]
    assert np.array_equal(pixels, np.stack([load_image(p) for p in good]))
    assert np.array_equal(pixels[0], x[0])


def _gray_pngs(x: np.ndarray, tmp_path) -> list:
    """Real digits as plain 8-bit gray PNGs of the kinds the fast decoder takes."""
    from PIL import PngImagePlugin

    rng = np.random.default_rng(1)
    paths = []
    for i in range(40):
        d = x[i]
        kind = i % 5
        if kind == 1:
            d = 255 - d  # dark ink on white, 28x28
        elif kind == 2:
            d = np.roll(d, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        elif kind == 3:  # bigger and not square, off-centre, on grey paper
            side = int(rng.integers(40, 300))
            big = np.asarray(Image.fromarray(d).resize((side, side)))
            canvas = np.full((side + 37, side + 91), 200, np.uint8)
            canvas[11:11 + side, 60:60 + side] = 200 - big * 0.7
            d = canvas
        elif kind == 4:  # 1x1, a thin strip
            d = d[:1, :1] if i % 2 else d[10:12, :]
        info = PngImagePlugin.PngInfo()
        if i % 3 == 0:
            info.add_text("Comment", "scanned, gamma 0.8")
            info.add(b"gAMA", (80000).to_bytes(4, "big"))
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.ascontiguousarray(d)).save(p, pnginfo=info, optimize=i % 2 == 0)
        paths.append(p)
    return paths


def test_fast_decoder_gives_pillows_arrays_on_real_digits(mnist_test, tmp_path, monkeypatch):
    from digitkit import preprocess

    paths = _gray_pngs(mnist_test[0], tmp_path)
    # Every one of them takes the fast path, and decodes to Pillow's own pixels.
    for p in paths:
        raw = preprocess._decode(p)
        assert raw is not None, p
        assert np.array_equal(raw, np.asarray(Image.open(p))), p
    fast_bulk, fast_reasons = load_images(paths)
    fast_one = [load_image(p) for p in paths]
    monkeypatch.setattr(preprocess, "_decode", lambda path: None)  # Pillow only
    slow_bulk, slow_reasons = load_images(paths)
    assert fast_reasons == slow_reasons == [""] * len(paths)
    assert np.array_equal(fast_bulk, slow_bulk)
    assert np.array_equal(np.stack(fast_one), slow_bulk)


def test_fast_decoder_leaves_everything_unusual_to_pillow(mnist_test, tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    from digitkit import preprocess

    d = mnist_test[0][0]
    good = tmp_path / "good.png"
    Image.fromarray(d).save(good)
    data = good.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    raw_exif = PngImagePlugin.PngInfo()
    raw_exif.add_text("Raw profile type exif", "exif\n 10\n0000")
    cases = {
        "exif.png": lambda p: Image.fromarray(d).save(p, exif=exif.tobytes()),
        "raw_profile.png": lambda p: Image.fromarray(d).save(p, pnginfo=raw_exif),
        "trns.png": lambda p: Image.fromarray(d).save(p, transparency=0),
        "rgb.png": lambda p: Image.fromarray(d).convert("RGB").save(p),
        "16bit.png": lambda p: Image.fromarray(d.astype(np.uint16) * 257).save(p),
        "bad_crc.png": lambda p: p.write_bytes(data[:29] + bytes([data[29] ^ 1]) + data[30:]),
        "no_iend.png": lambda p: p.write_bytes(data[:-12]),
        "gray.jpg": lambda p: Image.fromarray(d).save(p),
    }
    for name, make in cases.items():
        p = tmp_path / name
        make(p)
        assert preprocess._decode(p) is None, name
    # Pillow decides what is wrong with damaged files, as before the fast path.
    damaged = [tmp_path / "bad_crc.png", tmp_path / "no_iend.png"]
    _, fast_reasons = load_images(damaged)
    with monkeypatch.context() as m:
        m.setattr(preprocess, "_decode", lambda path: None)
        _, slow_reasons = load_images(damaged)
    assert fast_reasons == slow_reasons and fast_reasons[0]
    # Bombs are refused from the header, before any decoding.
    side = int(MAX_PIXELS**0.5) + 100
    head = bytearray(data)
    head[16:24] = side.to_bytes(4, "big") * 2
    import zlib

    head[29:33] = zlib.crc32(bytes(head[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(head))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")
