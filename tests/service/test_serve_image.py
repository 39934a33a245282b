"""The service scoring a real image model (the digits CNN from the pipeline on a slice): base64 PNG/JPEG
and nested arrays in, labels and probabilities out; bad images refused naming the record; a log row
holds statistics and a hash, never pixels."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.session import ort_session
from pipeline.params import load_params
from serving.app import create_app
from serving.predlog import make_engine, predictions

pytestmark = pytest.mark.slow

DIGITS_MAX = 16.0  # the digits' raw pixel scale is 0..16 (the card's value_range)


@pytest.fixture(scope="module")
def served(image_workspace, tmp_path_factory):
    params = load_params(image_workspace / "params.yaml")
    registry = Registry(image_workspace / params.paths.registry)
    database = tmp_path_factory.mktemp("image-log") / "predictions.sqlite"
    settings = params.serve.model_copy(update={"database_url": f"sqlite:///{database}", "reload_interval_seconds": 0.2})
    with TestClient(create_app(settings, registry.root)) as client:
        yield client, registry.get("v0001"), database


@pytest.fixture(scope="module")
def test_images(image_workspace):
    with np.load(image_workspace / "data/split/test.npz") as archive:
        return archive["x"]  # float32 [N, 1, 8, 8] in 0..16


def encoded(pixels: np.ndarray, image_format: str = "PNG", mode: str = "L") -> str:
    """A base64 image file of 8-bit pixels [H, W] (grayscale) or [H, W, 3] (RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(buffer, image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def logged(database, request_id: str) -> list[dict]:
    engine = make_engine(f"sqlite:///{database}")
    query = sa.select(predictions.c.inputs, predictions.c.label, predictions.c.probabilities)
    with engine.connect() as connection:
        rows = connection.execute(query.where(predictions.c.request_id == request_id).order_by(predictions.c.record_index))
        return [{"inputs": json.loads(r.inputs), "label": r.label, "probabilities": json.loads(r.probabilities)} for r in rows]


def test_arrays_are_scored_as_the_onnx_model_scores_the_test_images(served, test_images):
    client, version, _ = served
    images = test_images[:40]
    response = client.post("/predict", json=[image[0].tolist() if i % 2 else image.tolist() for i, image in enumerate(images)])
    assert response.status_code == 200, response.text
    probabilities, labels = ort_session(version.onnx).run(["probabilities", "label"], {"image": images})
    answers = response.json()["predictions"]
    assert [a["label"] for a in answers] == [str(label) for label in labels]
    card_classes = version.card_data()["classes"]
    for answer, expected in zip(answers, probabilities):
        assert list(answer["probabilities"]) == card_classes
        assert np.allclose(list(answer["probabilities"].values()), expected, atol=1e-6)


def test_png_and_jpeg_are_decoded_to_the_cards_mode_size_and_pixel_scale(served):
    client, version, database = served
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(8, 8))
    rgb_large = rng.integers(0, 256, size=(32, 24, 3))  # converted to grayscale and resized to 8x8
    body = [encoded(gray), encoded(gray, "JPEG"), f"data:image/png;base64,{encoded(rgb_large, mode='RGB')}"]
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    # The PNG's bytes 0..255 become the model's raw scale 0..16, exactly as ingest's arrays are.
    expected_probabilities, expected_labels = ort_session(version.onnx).run(
        ["probabilities", "label"], {"image": (gray.astype(np.float32) * (DIGITS_MAX / 255))[None, None]}
    )
    first = response.json()["predictions"][0]
    assert first["label"] == str(expected_labels[0])
    assert np.allclose(list(first["probabilities"].values()), expected_probabilities[0], atol=1e-5)
    sent = logged(database, response.json()["request_id"])
    assert [row["inputs"]["format"] for row in sent] == ["png", "jpeg", "png"]
    assert (sent[2]["inputs"]["height"], sent[2]["inputs"]["width"]) == (32, 24)  # as sent, before the resize


def test_a_log_row_holds_statistics_and_a_hash_never_pixels(served, test_images):
    client, _, database = served
    white = np.full((8, 8), 255)
    png = encoded(white)
    response = client.post("/predict", json=[png, test_images[0].tolist()])
    assert response.status_code == 200, response.text
    rows = logged(database, response.json()["request_id"])
    assert all(
        set(row["inputs"]) == {"sha256", "format", "height", "width", "brightness", "contrast", "sharpness"} for row in rows
    )
    assert all(len(json.dumps(row["inputs"])) < 300 for row in rows)  # no pixels, whatever the image's size
    assert rows[0]["inputs"]["sha256"] == hashlib.sha256(base64.b64decode(png)).hexdigest()
    assert rows[0]["inputs"]["brightness"] == 1.0 and rows[0]["inputs"]["contrast"] == 0.0  # all white, on a 0..1 scale
    assert rows[1]["inputs"]["format"] == "array"
    answer = response.json()["predictions"][1]
    assert rows[1]["label"] == answer["label"] and rows[1]["probabilities"] == list(answer["probabilities"].values())


def png_of(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# A decompression bomb: 16 kB of base64 claiming 10^8 pixels (about 0.5 GB and a second of CPU once decoded).
BOMB = png_of(Image.new("1", (10_000, 10_000)))


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ("not base64 at all!", "record 1: not valid base64 text of a PNG or JPEG file"),
        (base64.b64encode(b"GIF89a, no PNG").decode(), "record 1: not a readable PNG or JPEG image"),
        ([[1.0, 2.0]], "record 1: pixel array has shape [1, 2]; the model takes [1, 8, 8] or [8, 8, 1] or [8, 8]"),
        ([[200.0] * 8] * 8, "record 1: pixel values span 200..200, outside the model's raw scale 0..16"),
        ([[1, "x"] * 4] * 8, "record 1: nested arrays must be rectangular and hold only numbers"),
        ({"image": "..."}, "record 1: expected an image as base64 PNG/JPEG text or nested arrays of pixels, got dict"),
        (BOMB, "record 1: the image is 10000 x 10000 pixels, over the limit of 16,777,216"),
    ],
)
def test_a_bad_image_is_a_422_naming_the_record(served, test_images, bad, detail):
    client, _, _ = served
    response = client.post("/predict", json=[test_images[0].tolist(), bad])
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


# ---------------------------------------------------------------- multipart/form-data uploads


def png_bytes(pixels: np.ndarray, image_format: str = "PNG", mode: str = "L") -> bytes:
    return base64.b64decode(encoded(pixels, image_format, mode))


def uploaded(client, files: list[tuple[str, bytes]], **headers):
    """POST /predict with one file part per (name, bytes), as `curl -F image=@name` sends them."""
    return client.post(
        "/predict", files=[("image", (name, data, "application/octet-stream")) for name, data in files], **headers
    )


def without_request_id(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "request_id"}


def sample_files() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    return [
        ("gray.png", png_bytes(rng.integers(0, 256, size=(8, 8)))),
        ("gray.jpg", png_bytes(rng.integers(0, 256, size=(8, 8)), "JPEG")),
        ("large-rgb.png", png_bytes(rng.integers(0, 256, size=(32, 24, 3)), mode="RGB")),  # converted and resized
    ]


@pytest.mark.parametrize("count", [1, 3])
def test_uploaded_files_are_answered_and_logged_as_the_same_files_sent_as_base64(served, count):
    client, _, database = served
    files = sample_files()[:count]
    upload = uploaded(client, files)
    as_json = client.post("/predict", json=[base64.b64encode(data).decode() for _, data in files])
    assert upload.status_code == 200 and as_json.status_code == 200, upload.text + as_json.text
    assert without_request_id(upload.json()) == without_request_id(as_json.json())
    assert [p["index"] for p in upload.json()["predictions"]] == list(range(count))
    rows = logged(database, upload.json()["request_id"])
    assert rows == logged(database, as_json.json()["request_id"])  # statistics, hash, format, size, answer
    assert [row["inputs"]["sha256"] for row in rows] == [hashlib.sha256(data).hexdigest() for _, data in files]


def test_the_openapi_spec_documents_the_multipart_body(served):
    client, _, _ = served
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    form = body["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["items"]["contentMediaType"] == "application/octet-stream"


BOUNDARY = "evergreen-boundary"


@pytest.mark.parametrize(
    ("parts", "detail"),
    [
        ([("ok.png", None), ("b.gif", b"GIF89a, no PNG")], "part 1 ('b.gif'): not a readable PNG or JPEG image"),
        ([("empty.png", b"")], "part 0 ('empty.png'): not a readable PNG or JPEG image"),
        ([("ok.png", None), ("bomb.png", base64.b64decode(BOMB))], "part 1 ('bomb.png'): the image is 10000 x 10000 pixels"),
    ],
)
def test_a_bad_file_part_is_a_422_naming_the_part_and_nothing_is_logged(served, parts, detail):
    client, _, database = served
    good = png_bytes(np.full((8, 8), 128))
    before = count_rows(database)
    response = uploaded(client, [(name, good if data is None else data) for name, data in parts])
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)
    assert count_rows(database) == before


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (f"multipart/form-data; boundary={BOUNDARY}", b"no part at all", "multipart body: no part starts with the boundary"),
        ("multipart/form-data", b"--x\r\n\r\nabc\r\n--x--\r\n", "multipart body: the Content-Type names no boundary"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="cut.png"\r\n\r\n\x89PNG'.encode(
                "latin-1"
            ),
            "multipart body: the closing boundary is missing: the body is cut short",
        ),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--{BOUNDARY}--\r\n'.encode(),
            "part 0 (field 'note'): not a readable PNG or JPEG image",
        ),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--{BOUNDARY}--\r\n".encode("latin-1"),
            "part 0: needs a header Content-Disposition: form-data",
        ),
    ],
)
def test_a_malformed_multipart_body_is_a_422_saying_what_is_wrong(served, content_type, body, detail):
    client, _, _ = served
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_uploads_keep_the_body_and_record_limits(image_workspace, tmp_path):
    params = load_params(image_workspace / "params.yaml")
    settings = params.serve.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'log.sqlite'}", "max_records": 2, "max_body_bytes": 2048}
    )
    small = png_bytes(np.full((8, 8), 10))
    with TestClient(create_app(settings, Registry(image_workspace / params.paths.registry).root)) as client:
        assert uploaded(client, [("a.png", small), ("b.png", small)]).status_code == 200
        too_many = uploaded(client, [("a.png", small)] * 3)
        assert too_many.status_code == 413 and too_many.json()["detail"] == "3 files is over the batch limit of 2"
        too_big = uploaded(client, [("noise.png", png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64))))])
        assert too_big.status_code == 413 and "over the limit of 2048 bytes" in too_big.json()["detail"]


def test_an_upload_to_a_model_of_another_kind_is_a_422_naming_its_kind(served_workspace, tmp_path):
    params = load_params(served_workspace / "params.yaml")
    settings = params.serve.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'log.sqlite'}"})
    with TestClient(create_app(settings, Registry(served_workspace / params.paths.registry).root)) as client:
        response = uploaded(client, [("a.png", png_bytes(np.full((8, 8), 10)))])
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "multipart/form-data uploads image files, for image models; model v0001 is a tabular model: "
        "send a JSON list of records"
    )


def count_rows(database) -> int:
    engine = make_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())
