"""Input decoding: base64, data URIs and URLs — and every way they can be bad."""

from __future__ import annotations

import base64
import io

import pytest
from aiohttp import web
from PIL import Image

from comfyfleet.config import Settings
from comfyfleet.errors import ForbiddenURL, InputImageError, PayloadTooLarge
from comfyfleet.inputs import decode_image, safe_filename
from comfyfleet.jobs import InputImage


def png(width: int = 4, height: int = 3, color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def settings(**kw: object) -> Settings:
    return Settings(**kw)


async def test_base64_decodes_and_names_by_format() -> None:
    data = png()
    got = await decode_image(InputImage(image=base64.b64encode(data).decode()), 0, settings())
    assert got.data == data
    assert got.media_type == "image/png"
    assert got.name == "image_0.png"


async def test_data_uri_with_whitespace_and_missing_padding() -> None:
    data = png()
    text = base64.b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    got = await decode_image(
        InputImage(name="photo.png", image=f"data:image/png;base64,{wrapped}"), 1, settings()
    )
    assert got.data == data
    assert got.name == "photo.png"


async def test_invalid_base64_is_an_input_image_error() -> None:
    with pytest.raises(InputImageError, match=r"images\[0\] is not valid base64"):
        await decode_image(InputImage(image="not base64 at all!!"), 0, settings())


async def test_bytes_that_are_not_an_image() -> None:
    junk = base64.b64encode(b"hello, this is text, not a picture").decode()
    with pytest.raises(InputImageError, match=r"images\[2\] \(x.png\) is not a readable image"):
        await decode_image(InputImage(name="x.png", image=junk), 2, settings())


async def test_oversized_image_is_refused_before_decoding() -> None:
    data = base64.b64encode(png(64, 64)).decode()
    with pytest.raises(PayloadTooLarge, match="larger than the 100 bytes allowed") as err:
        await decode_image(InputImage(image=data), 0, settings(max_input_bytes=100))
    assert err.value.status == 413


async def test_non_base64_data_uri_is_refused() -> None:
    with pytest.raises(InputImageError, match="only base64 data URIs"):
        await decode_image(InputImage(image="data:image/png,abc"), 0, settings())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.png"])
async def test_other_schemes_are_forbidden(url: str) -> None:
    with pytest.raises(ForbiddenURL, match="only http"):
        await decode_image(InputImage(image=url), 0, settings())


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        ("a b/c d.png", "c_d.png"),
        ("..", "file"),
        (".hidden.png", "hidden.png"),
        (None, "file"),
    ],
)
def test_names_are_sanitised(name: str | None, safe: str) -> None:
    assert safe_filename(name) == safe


async def test_traversal_name_is_flattened() -> None:
    data = base64.b64encode(png()).decode()
    got = await decode_image(InputImage(name="../../../etc/cron.d/x", image=data), 0, settings())
    assert got.name == "x.png"


# --- URLs -------------------------------------------------------------------------------


@pytest.fixture
async def site():
    image = png(5, 5, (1, 2, 3))

    async def img(_: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    async def big(_: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the cap must apply while streaming
        await resp.prepare(_)
        for _i in range(64):
            await resp.write(b"\0" * 1024)
        return resp

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/img.png" if n == 0 else f"/hop/{n - 1}")

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/img.png", img)
    app.router.add_get("/big", big)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/page", text)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", image
    await runner.cleanup()


async def test_url_is_downloaded_when_private_urls_are_allowed(site) -> None:
    base, image = site
    got = await decode_image(
        InputImage(image=f"{base}/img.png"), 0, settings(allow_private_urls=True)
    )
    assert got.data == image


async def test_loopback_url_is_forbidden_by_default(site) -> None:
    base, _ = site
    with pytest.raises(ForbiddenURL, match=r"127\.0\.0\.1 resolves to a non-public address"):
        await decode_image(InputImage(image=f"{base}/img.png"), 0, settings())


async def test_a_name_resolving_to_loopback_is_forbidden(site) -> None:
    base, _ = site
    url = base.replace("127.0.0.1", "localhost")
    with pytest.raises(ForbiddenURL, match="localhost resolves to a non-public address"):
        await decode_image(InputImage(image=f"{url}/img.png"), 0, settings())


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "10.0.0.1", "192.168.1.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"]
)
async def test_private_and_link_local_literals_are_forbidden(host: str) -> None:
    with pytest.raises(ForbiddenURL, match="non-public address"):
        await decode_image(InputImage(image=f"http://{host}/x.png"), 0, settings())


async def test_redirects_are_followed_up_to_the_cap(site) -> None:
    base, image = site
    ok = settings(allow_private_urls=True, url_max_redirects=3)
    assert (await decode_image(InputImage(image=f"{base}/hop/2"), 0, ok)).data == image
    with pytest.raises(ForbiddenURL, match="more than 3 redirects"):
        await decode_image(InputImage(image=f"{base}/hop/3"), 0, ok)


async def test_download_is_capped_while_streaming(site) -> None:
    base, _ = site
    capped = settings(allow_private_urls=True, max_input_bytes=10_000)
    with pytest.raises(PayloadTooLarge, match="larger than the 10000 bytes allowed"):
        await decode_image(InputImage(image=f"{base}/big"), 0, capped)


async def test_url_that_is_not_an_image(site) -> None:
    base, _ = site
    with pytest.raises(InputImageError, match="is not a readable image"):
        await decode_image(InputImage(image=f"{base}/page"), 0, settings(allow_private_urls=True))


async def test_http_error_is_reported(site) -> None:
    base, _ = site
    with pytest.raises(InputImageError, match="answered HTTP 404"):
        await decode_image(InputImage(image=f"{base}/nope"), 0, settings(allow_private_urls=True))
