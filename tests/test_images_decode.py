"""digitkit.images.decode: reading files (OpenCV fast path, Pillow for the rest), bad files as
ImageError with a reason, and load_image / load_images."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from digitkit.errors import ImageError
from digitkit.images import load_image, load_images
from digitkit.images.decode import MAX_PIXELS


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
    from digitkit.images import decode

    paths = _gray_pngs(mnist_test[0], tmp_path)
    # Every one of them takes the fast path, and decodes to Pillow's own pixels.
    for p in paths:
        raw = decode._fast_gray(p.read_bytes(), p)
        assert raw is not None, p
        assert np.array_equal(raw, np.asarray(Image.open(p))), p
    fast_bulk, fast_reasons = load_images(paths)
    fast_one = [_load_or_reason(p) for p in paths]
    monkeypatch.setattr(decode, "_fast_gray", lambda data, path: None)  # Pillow only
    slow_bulk, slow_reasons = load_images(paths)
    # Both decoders agree on every file. Only the 1x1 and thin-strip crops (kind 4) may hold
    # too little ink to be a digit; both paths then call them blank.
    assert fast_reasons == slow_reasons
    assert all(r == "" if i % 5 != 4 else r == "" or r.startswith("blank")
               for i, r in enumerate(fast_reasons))
    assert np.array_equal(fast_bulk, slow_bulk)
    assert [r for r in fast_one if isinstance(r, str)] == [r for r in fast_reasons if r]
    assert np.array_equal(np.stack([a for a in fast_one if not isinstance(a, str)]), slow_bulk)


def _load_or_reason(path):
    try:
        return load_image(path)
    except ImageError as e:
        return e.reason


def test_fast_decoder_leaves_everything_unusual_to_pillow(mnist_test, tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    from digitkit.images import decode

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
        assert decode._fast_gray(p.read_bytes(), p) is None, name
    # Pillow decides what is wrong with damaged files, as before the fast path.
    damaged = [tmp_path / "bad_crc.png", tmp_path / "no_iend.png"]
    _, fast_reasons = load_images(damaged)
    with monkeypatch.context() as m:
        m.setattr(decode, "_fast_gray", lambda data, path: None)
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


# -- hostile files (issue 11); what is read at all: tests/test_images_reading.py ----------


def test_any_file_name_is_read(tmp_path, mnist_test):
    d = mnist_test[0][0]
    names = [b"caf\xe9.png", b"\xff\xfe.png", b"a,b\n\"c\".png", b"-x.png", b"back\\slash.png"]
    paths = []
    for name in names:
        raw = os.path.join(os.fsencode(tmp_path), name)
        with open(raw, "wb") as f:
            Image.fromarray(d).save(f, format="PNG")
        paths.append(os.fsdecode(raw))
    pixels, reasons = load_images(paths)
    assert reasons == [""] * len(names) and all(np.array_equal(p, d) for p in pixels)


def test_blank_images_are_refused_with_a_reason(tmp_path, mnist_test):
    images = {"black.png": Image.new("L", (28, 28)), "white.png": Image.new("L", (90, 60), 255),
              "clear.png": Image.new("RGBA", (40, 40), (0, 0, 0, 0)),
              "pixel.png": Image.new("L", (1, 1), 200)}
    for name, im in images.items():
        im.save(tmp_path / name)
        with pytest.raises(ImageError, match=r"^.*: blank: no digit \(0 ink pixels"):
            load_image(tmp_path / name)
    Image.fromarray(mnist_test[0][0]).save(tmp_path / "digit.png")
    _, reasons = load_images([str(tmp_path / n) for n in [*images, "digit.png"]])
    assert [r.split(" (")[0] for r in reasons] == ["blank: no digit"] * 4 + [""]


def test_multi_frame_files_give_their_first_frame(tmp_path, mnist_test):
    x = mnist_test[0]
    frames = [Image.fromarray(x[i]) for i in range(200)]
    frames[0].save(tmp_path / "many.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "many.tiff", save_all=True, append_images=frames[1:50])
    for name in ("many.gif", "many.tiff"):
        assert np.array_equal(load_image(tmp_path / name), x[0]), name


# -- the format allow-list (issue 19) --------------------------------------------------------


def test_only_the_supported_formats_are_decoded(tmp_path, mnist_test):
    """Every other format Pillow can write, named .png, is refused by name, not decoded."""
    from _hostile import UNSUPPORTED, unsupported_files

    files = unsupported_files(tmp_path, mnist_test[0][0])
    assert len(files) >= len(UNSUPPORTED) - 2  # this Pillow writes (nearly) all of them
    for path, reason in files.items():
        with pytest.raises(ImageError) as e:
            load_image(path)
        assert e.value.reason.startswith(reason), (path.name, e.value.reason)
        assert "digitkit reads PNG, JPEG, BMP, GIF, TIFF or WebP" in e.value.reason
    _, reasons = load_images([str(p) for p in files])
    assert [r.split(";")[0] + ";" for r in reasons] == \
        [r.split(";")[0] + ";" for r in files.values()]
    assert all(r.startswith("unsupported format (") for r in reasons)


def test_a_postscript_file_never_starts_ghostscript(tmp_path, mnist_test):
    """With a logging `gs` first on PATH (what Pillow would run for PostScript), decoding a
    PostScript file named x.png leaves no log: no program is started."""
    import subprocess
    import sys

    from _hostile import fake_ghostscript, unsupported_files

    log = tmp_path / "gs.log"
    fake_ghostscript(tmp_path / "bin", log)
    ps = next(p for p in unsupported_files(tmp_path / "in", mnist_test[0][0]) if p.name == "x.png")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    code = ("import shutil, sys; from digitkit.errors import ImageError\n"
            "from digitkit.images import load_image\n"
            "assert shutil.which('gs') == sys.argv[2]  # the logging one is what a decoder finds\n"
            "try:\n    load_image(sys.argv[1])\nexcept ImageError as e:\n    print(e.reason)\n")
    r = subprocess.run([sys.executable, "-c", code, str(ps), str(tmp_path / "bin" / "gs")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("unsupported format (EPS"), r.stdout
    assert not log.exists(), log.read_text()
