"""Safe decoding of a person's image files (mnistlab.images)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from mnistlab.errors import ImageError
from mnistlab.images import MAX_BYTES, load_image, to_gray
from mnistlab.preprocess import preprocess_image


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _saved(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient() -> Image.Image:
    a = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64, columns 0..252
    return Image.fromarray(a)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# Sources and formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_allowed_format_decodes_to_the_same_picture(fmt):
    data = _saved(_gradient().convert("RGB") if fmt == "JPEG" else _gradient(), fmt)
    gray = load_image(data)
    assert gray.dtype == np.float32 and gray.shape == (48, 64)
    expected = np.asarray(_gradient(), dtype=np.float32)
    tolerance = 4.0 if fmt in ("JPEG", "WEBP") else 0.5
    assert np.abs(gray - expected).mean() < tolerance


def test_path_bytes_file_object_and_pil_image_give_the_same_array(tmp_path):
    data = _png_bytes(_gradient())
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    arrays = [
        load_image(path),
        load_image(str(path)),
        load_image(data),
        load_image(bytearray(data)),
        load_image(memoryview(data)),
        load_image(io.BytesIO(data)),
        load_image(Image.open(io.BytesIO(data))),
    ]
    with path.open("rb") as f:
        arrays.append(load_image(f))
    for a in arrays:
        np.testing.assert_array_equal(a, arrays[0])


def test_gif_uses_the_first_frame():
    frames = [Image.new("L", (10, 10), 0), Image.new("L", (10, 10), 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue()).max() == 0


def test_exif_orientation_turns_a_phone_photo_upright():
    im = Image.new("RGB", (40, 20), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    gray = load_image(_saved(im, "JPEG", exif=exif.tobytes()))
    assert gray.shape == (40, 20)


# Refusals ----------------------------------------------------------------------------------------


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>'


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("drawing.eps", EPS, "EPS"),
        ("drawing.svg", SVG, "SVG"),
        ("notes.txt", b"this is a seven, honest\n", "text"),
        ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        ("random.bin", bytes(range(256)) * 4, "bytes"),
    ],
)
def test_wrong_formats_are_refused_naming_the_file_and_the_fix(tmp_path, name, data, said):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as e:
        load_image(path)
    msg = str(e.value)
    assert name in msg and "PNG, JPEG" in msg and said in msg


def test_eps_is_refused_even_when_named_png(tmp_path):
    path = tmp_path / "innocent.png"
    path.write_bytes(EPS)
    with pytest.raises(ImageError, match="never opened"):
        load_image(path)


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.png"
    with path.open("wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing is written or read
    with pytest.raises(ImageError, match="too large: 20,971,521 bytes"):
        load_image(path)


def test_bytes_and_file_objects_over_the_byte_limit_are_refused():
    data = _png_bytes(_gradient())
    with pytest.raises(ImageError, match="too large"):
        load_image(data, max_bytes=len(data) - 1)
    with pytest.raises(ImageError, match="too large"):
        load_image(io.BytesIO(data), max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    ("width", "height", "said"),
    [
        (8000, 6000, "8000x6000 = 48,000,000 pixels"),  # over mnistlab's cap only
        (10_000, 10_000, "too many pixels"),  # Pillow's DecompressionBombWarning
        (20_000, 20_000, "too many pixels"),  # Pillow's DecompressionBombError
    ],
)
def test_too_many_pixels_is_refused_before_decoding(width, height, said):
    with pytest.raises(ImageError, match=said):
        load_image(_png_header_only(width, height))


def test_pixel_cap_applies_to_pil_images_too():
    with pytest.raises(ImageError, match="limit is 100"):
        load_image(Image.new("L", (20, 20)), max_pixels=100)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"])
def test_truncated_files_are_errors_not_half_pictures(fmt):
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = _saved(im.convert("RGB") if fmt == "JPEG" else im, fmt)
    with pytest.raises(ImageError, match="truncated|corrupt|not an image"):
        load_image(data[: len(data) * 2 // 3])


def test_load_truncated_images_switched_on_is_refused(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(_png_bytes(_gradient()))


@pytest.mark.parametrize(
    ("source", "said"),
    [(b"", "empty"), (12345, "received int"), (io.StringIO("abc"), "text mode")],
)
def test_unusable_sources(source, said):
    with pytest.raises(ImageError, match=said):
        load_image(source)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


# Modes -------------------------------------------------------------------------------------------


def test_16_bit_is_scaled_not_clipped():
    a = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    for mode in ("I;16", "I;16B"):
        im = Image.frombytes(mode, (4, 1), a.astype("<u2" if mode == "I;16" else ">u2").tobytes())
        np.testing.assert_allclose(to_gray(im), [[0.0, 1.0, 127.5, 255.0]], atol=0.01)


def test_16_bit_png_round_trip():
    a = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    gray = load_image(_png_bytes(Image.fromarray(a)))
    np.testing.assert_allclose(gray, a / 257.0, atol=0.01)


def test_32_bit_int_and_float_modes_are_scaled_by_their_range():
    ints = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32))
    np.testing.assert_allclose(to_gray(ints), [[0.0, 1000 / 257.0, 255.0]], atol=0.01)
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(to_gray(unit), [[0.0, 127.5, 255.0]])
    wide = Image.fromarray(np.array([[-5.0, 0.0, 95.0]], dtype=np.float32))
    np.testing.assert_allclose(to_gray(wide), [[0.0, 12.75, 255.0]])
    bad = Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(ImageError, match="NaN"):
        to_gray(bad)


def test_one_bit_and_cmyk_and_palette():
    one = Image.new("1", (4, 4), 0)
    one.putpixel((1, 1), 1)
    g = load_image(_png_bytes(one))
    assert g[1, 1] == 255 and g.sum() == 255
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 255))  # full black ink
    assert load_image(_saved(cmyk, "JPEG")).max() < 10
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    assert load_image(_png_bytes(pal)).min() == 255


def _strokes_alpha() -> np.ndarray:
    alpha = np.zeros((30, 30), np.uint8)
    alpha[5:25, 13:17] = 255  # a "1"
    return alpha


def test_dark_strokes_on_a_transparent_canvas_become_dark_ink_on_white():
    rgba = np.zeros((30, 30, 4), np.uint8)  # transparent pixels are black underneath
    rgba[..., 3] = _strokes_alpha()
    gray = load_image(_png_bytes(Image.fromarray(rgba)))
    assert gray[0, 0] == 255 and gray[15, 15] == 0


def test_light_strokes_on_a_transparent_canvas_become_light_ink_on_black():
    rgba = np.full((30, 30, 4), 255, np.uint8)  # transparent pixels are white underneath
    rgba[..., 3] = _strokes_alpha()
    gray = load_image(_png_bytes(Image.fromarray(rgba)))
    assert gray[0, 0] == 0 and gray[15, 15] == 255


def test_transparent_corners_of_a_photo_look_like_its_paper():
    rgba = np.full((30, 30, 4), 200, np.uint8)  # grey paper, opaque
    rgba[..., 3] = 255
    rgba[5:25, 13:17, :3] = 20  # ink
    rgba[:4, :4] = 0  # a transparent, black corner
    gray = load_image(_png_bytes(Image.fromarray(rgba)))
    assert gray[0, 0] == 200 and gray[15, 15] == 20


def test_la_and_palette_transparency_composite_the_same_way():
    la = np.zeros((30, 30, 2), np.uint8)
    la[..., 1] = _strokes_alpha()
    assert (
        load_image(
            _png_bytes(
                Image.fromarray(
                    la,
                )
            )
        ).tolist()
        == load_image(
            _png_bytes(Image.fromarray(np.dstack([la[..., :1]] * 3 + [la[..., 1:]])))
        ).tolist()
    )
    pal = Image.fromarray((_strokes_alpha() > 0).astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black ...
    pal.info["transparency"] = 0  # ... but entry 0 is transparent
    gray = load_image(_png_bytes(pal, transparency=0))
    assert gray[0, 0] == 255 and gray[15, 15] == 0


def test_fully_transparent_picture_is_plain_white():
    gray = load_image(_png_bytes(Image.new("RGBA", (5, 5), (0, 0, 0, 0))))
    assert (gray == 255).all()


# Any bytes: a result or an ImageError, nothing else ----------------------------------------------


def _seeds() -> list[bytes]:
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8))
    return [
        _png_bytes(im),
        _saved(im, "JPEG"),
        _saved(im, "GIF"),
        _saved(im, "BMP"),
        _saved(im, "TIFF"),
        _saved(im, "WEBP"),
        _png_bytes(im.convert("RGBA")),
    ]


@st.composite
def _mutated_images(draw):
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


_SEEDS = _seeds()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), _mutated_images()))
def test_any_bytes_give_a_result_or_an_image_error(data):
    try:
        gray = load_image(data)
    except ImageError:
        return
    assert gray.dtype == np.float32 and gray.ndim == 2
    assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 255
    result = preprocess_image(gray)
    assert result.image.shape == (28, 28) and result.status in ("ok", "blank", "no_digit")
