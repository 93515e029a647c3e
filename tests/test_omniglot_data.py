"""The Omniglot data layer: checksums, where archives are found, downloads, preprocessing, episodes, one-shot runs.

Everything runs on the three archives shipped in data/omniglot (3.3 MB); nothing touches the network (the
download tests use file:// URLs) or the real user cache (XDG_CACHE_HOME points into a temporary folder).
"""

import hashlib
import io
import os
import shutil
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metalearn_core as ml
from metalearn_core import data
from metalearn_core.errors import ConfigError, DataError, MetaLearnError
from metalearn_core.omniglot import (SPLITS, TEST_ALPHABETS, TRAIN_ALPHABETS, VAL_ALPHABETS, OmniglotTasks,
                                     accuracy, cross_entropy_loss)

REPO_DATA = Path(ml.__file__).resolve().parent.parent / "data" / "omniglot"
SHIPPED = ("images_background_small1.zip", "images_background_small2.zip", "all_runs.zip")
ALPHABET_SIZES = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26,
                  "Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No $METALEARN_DATA from the developer's shell, and a private user cache."""
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot_cache")


@pytest.fixture(scope="module")
def images(cache_dir):
    return data.load_omniglot(data_dir=REPO_DATA, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def small1(cache_dir):
    return data.load_omniglot("images_background_small1.zip", size=14, data_dir=REPO_DATA, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def runs():
    return data.load_oneshot_runs(data_dir=REPO_DATA)


def copy_to(tmp: Path, name: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(REPO_DATA / name, tmp / name))


# ---- the archive table and checksums ----------------------------------------------------------------------

def test_the_shipped_archives_pass_their_checksums():
    assert REPO_DATA.is_dir() and data.repo_data_dir() == REPO_DATA
    assert (REPO_DATA / "LICENSE").is_file() and (REPO_DATA / "README.md").is_file()
    for name in SHIPPED:
        path = REPO_DATA / name
        assert data.verify_archive(path) == path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == data.ARCHIVES[name].sha256
        assert data.ARCHIVES[name].sha256 in (REPO_DATA / "README.md").read_text()


def test_the_table_names_every_official_archive():
    assert set(data.ARCHIVES) == set(SHIPPED) | {"images_background.zip", "images_evaluation.zip"}
    for name, info in data.ARCHIVES.items():
        assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0 and info.size > 0
        assert info.url == f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
    assert data.IMAGE_ARCHIVES == ("images_background_small1.zip", "images_background_small2.zip",
                                   "images_background.zip", "images_evaluation.zip")


def test_a_corrupted_copy_fails_the_checksum(tmp_path):
    path = copy_to(tmp_path, "images_background_small1.zip")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        data.find_archive("images_background_small1.zip", data_dir=tmp_path)
    msg = one_line(e)
    assert str(path) in msg and data.ARCHIVES[path.name].sha256 in msg and "corrupt" in msg


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "all_runs.zip").write_text("<html>404: Not Found</html>")
    with pytest.raises(DataError) as e:
        data.find_archive("all_runs.zip", data_dir=tmp_path)
    msg = one_line(e)
    assert str(tmp_path / "all_runs.zip") in msg and data.ARCHIVES["all_runs.zip"].sha256 in msg


def test_an_unknown_archive_name_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        data.find_archive("images_background_small3.zip")
    assert "images_background_small1.zip" in one_line(e)


def test_verification_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path = copy_to(tmp_path, "all_runs.zip")
    data.verify_archive(path)
    calls = []
    monkeypatch.setattr(data, "_sha256", lambda p: calls.append(p) or "0" * 64)
    data.verify_archive(path)                      # same size and mtime: not hashed again
    assert calls == []
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(DataError):                 # touched: hashed again (and our fake hash is wrong)
        data.verify_archive(path)
    assert calls == [path]


# ---- where archives are looked for ---------------------------------------------------------------------------

def test_a_missing_archive_names_every_folder_searched(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "from_env"))
    with pytest.raises(DataError) as e:
        data.find_archive("images_evaluation.zip", data_dir=tmp_path / "explicit")
    msg = one_line(e)
    dirs = data.search_dirs(tmp_path / "explicit")
    assert dirs[0] == tmp_path / "explicit" and REPO_DATA in dirs
    assert dirs[-1] == tmp_path / "xdg" / "metalearn" / "omniglot"
    for d in dirs:
        assert str(d) in msg
    assert "images_evaluation.zip" in msg and data.ARCHIVES["images_evaluation.zip"].url in msg
    assert "download=True" in msg and data.DATA_ENV_VAR in msg


def test_search_order_explicit_then_env_then_repo_then_cache(tmp_path, monkeypatch):
    name = "all_runs.zip"
    explicit, env = copy_to(tmp_path / "explicit", name), copy_to(tmp_path / "env", name)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
    assert data.find_archive(name, data_dir=tmp_path / "explicit") == explicit
    assert data.find_archive(name) == env
    monkeypatch.delenv(data.DATA_ENV_VAR)
    assert data.find_archive(name) == REPO_DATA / name
    cached = copy_to(tmp_path / "xdg" / "metalearn" / "omniglot", name)
    monkeypatch.setattr(data, "repo_data_dir", lambda: tmp_path / "no_repo")
    assert data.find_archive(name) == cached
    # an <dir>/omniglot subfolder is searched too, right after <dir> itself
    sub = copy_to(tmp_path / "shared" / "omniglot", name)
    assert data.find_archive(name, data_dir=tmp_path / "shared") == sub


def test_a_corrupt_first_copy_is_reported_not_skipped(tmp_path):
    (tmp_path / "all_runs.zip").write_bytes(b"truncated")
    with pytest.raises(DataError):                 # even though the repository holds a good copy
        data.find_archive("all_runs.zip", data_dir=tmp_path)


# ---- downloads (file:// URLs only) -----------------------------------------------------------------------------

def test_download_from_a_file_url(tmp_path):
    url = (REPO_DATA / "all_runs.zip").as_uri()
    path = data.download_archive("all_runs.zip", tmp_path / "dl", url=url)
    assert path == tmp_path / "dl" / "all_runs.zip"
    assert path.read_bytes() == (REPO_DATA / "all_runs.zip").read_bytes()
    assert os.listdir(tmp_path / "dl") == ["all_runs.zip"]          # no temporary file left behind


def test_find_archive_downloads_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "repo_data_dir", lambda: None)
    fetched, real_download = [], data.download_archive

    def file_url_download(name, dest_dir, url=None):                 # the official URL, replaced by a file:// one
        fetched.append((name, Path(dest_dir)))
        return real_download(name, dest_dir, url=(REPO_DATA / name).as_uri())

    monkeypatch.setattr(data, "download_archive", file_url_download)
    with pytest.raises(DataError):
        data.find_archive("all_runs.zip", data_dir=tmp_path / "d")
    assert fetched == []
    path = data.find_archive("all_runs.zip", data_dir=tmp_path / "d", download=True)
    assert fetched == [("all_runs.zip", tmp_path / "d")] and path == tmp_path / "d" / "all_runs.zip"
    assert data.find_archive("all_runs.zip", data_dir=tmp_path / "d") == path


def test_a_download_with_the_wrong_hash_is_refused_and_leaves_no_file(tmp_path):
    url = (REPO_DATA / "images_background_small1.zip").as_uri()
    with pytest.raises(DataError) as e:
        data.download_archive("all_runs.zip", tmp_path / "dl", url=url)
    msg = one_line(e)
    assert data.ARCHIVES["all_runs.zip"].sha256 in msg and url in msg
    assert os.listdir(tmp_path / "dl") == []


def test_a_failed_download_is_a_data_error_and_leaves_no_file(tmp_path):
    url = (tmp_path / "nowhere" / "all_runs.zip").as_uri()
    with pytest.raises(DataError) as e:
        data.download_archive("all_runs.zip", tmp_path / "dl", url=url)
    assert url in one_line(e)
    assert os.listdir(tmp_path / "dl") == []


# ---- preprocessing --------------------------------------------------------------------------------------------

def test_preprocessed_shapes_names_and_deduplication(images):
    assert isinstance(images, data.OmniglotImages)
    assert images.images.shape == (242, 20, 28, 28) and images.images.dtype == torch.uint8
    assert len(images) == 242 and images.n_drawers == 20 and images.size == 28 and images.resample == "BOX"
    assert len(set(images.characters)) == 242
    assert Counter(images.alphabets) == ALPHABET_SIZES
    assert all(c.startswith(a + "/character") for a, c in zip(images.alphabets, images.characters))
    assert "Greek/character01" in images.characters
    origin = dict(zip(images.characters, images.archives))
    assert origin["Greek/character01"] == origin["Latin/character26"] == "images_background_small1.zip"
    assert origin["Sanskrit/character01"] == "images_background_small2.zip"


def test_values_are_in_0_1_with_ink_1(images):
    x = images.as_float()
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    assert x.median() == 0 and (x[..., 0, :] == 0).float().mean() > 0.99   # background is 0, even at the edges
    assert 0.03 < x.mean() < 0.2                                      # strokes are a small, bright minority
    # BOX resampling averages areas: the shrunk image keeps the ink fraction of the original drawing
    with zipfile.ZipFile(REPO_DATA / "images_background_small1.zip") as zf:
        member = sorted(m for m in zf.namelist() if "/Balinese/character01/" in m and m.endswith(".png"))[0]
        raw = np.asarray(Image.open(io.BytesIO(zf.read(member))).convert("L"), dtype=np.float64) / 255
    i = images.characters.index("Balinese/character01")
    assert raw.shape == (105, 105) and raw.mean() > 0.5               # the PNG: white paper, black ink
    assert abs(float(x[i, 0].mean()) - (1 - raw.mean())) < 0.01


def test_a_cached_load_is_fast_and_equal(images, cache_dir, monkeypatch):
    assert len(list(cache_dir.glob("omniglot_*_28px.pt"))) == 1
    monkeypatch.setattr(data, "_preprocess", lambda *a: pytest.fail("the cache was not used"))
    start = time.perf_counter()
    again = data.load_omniglot(data_dir=REPO_DATA, cache_dir=cache_dir)
    assert time.perf_counter() - start < 0.5
    assert torch.equal(again.images, images.images)
    assert (again.characters, again.alphabets, again.archives) == (images.characters, images.alphabets,
                                                                  images.archives)


def test_one_archive_at_another_size(small1, cache_dir):
    assert small1.images.shape == (136, 20, 14, 14)
    assert sorted(set(small1.alphabets)) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert len(list(cache_dir.glob("*_14px.pt"))) == 1


@pytest.mark.parametrize("kwargs, words", [
    ({"archives": ["all_runs.zip"]}, "load_oneshot_runs"),
    ({"archives": []}, "at least one archive"),
    ({"archives": ["images_background_small1.zip"] * 2}, "twice"),
    ({"size": 0}, "size"),
])
def test_bad_load_arguments(kwargs, words, tmp_path):
    with pytest.raises(ConfigError) as e:
        data.load_omniglot(data_dir=REPO_DATA, cache_dir=tmp_path, **kwargs)
    assert words in one_line(e)


# ---- episodes -------------------------------------------------------------------------------------------------

def test_splits_are_by_alphabet_and_disjoint(images):
    assert set(TRAIN_ALPHABETS) | set(VAL_ALPHABETS) | set(TEST_ALPHABETS) == set(ALPHABET_SIZES)
    assert len(TRAIN_ALPHABETS) + len(VAL_ALPHABETS) + len(TEST_ALPHABETS) == len(ALPHABET_SIZES)
    chars = {s: set(OmniglotTasks(images, s).class_characters.tolist()) for s in SPLITS}
    assert {s: len(c) for s, c in chars.items()} == {"train": 161, "val": 22, "test": 59}
    assert not (chars["train"] & chars["val"] or chars["train"] & chars["test"] or chars["val"] & chars["test"])
    assert chars["train"] | chars["val"] | chars["test"] == set(range(242))
    for s, c in chars.items():
        assert {images.alphabets[i] for i in c} == set(SPLITS[s])


@pytest.mark.parametrize("split, ways, shots, queries", [("train", 5, 1, 15), ("val", 20, 5, 15), ("test", 3, 2, 4)])
def test_episode_shapes_and_labels(images, split, ways, shots, queries):
    family = OmniglotTasks(images, split, ways=ways)
    batch = family.sample(4, shots=shots, queries=queries, seed=0)
    assert batch.x_support.shape == (4, ways * shots, 1, 28, 28) and batch.x_support.dtype == torch.float32
    assert batch.x_query.shape == (4, ways * queries, 1, 28, 28)
    assert batch.y_support.shape == (4, ways * shots) and batch.y_support.dtype == torch.int64
    assert batch.y_query.shape == (4, ways * queries) and batch.y_query.dtype == torch.int64
    assert 0 <= batch.x_support.min() and batch.x_query.max() <= 1
    for b in range(4):
        assert torch.bincount(batch.y_support[b], minlength=ways).tolist() == [shots] * ways
        assert torch.bincount(batch.y_query[b], minlength=ways).tolist() == [queries] * ways
        assert len(set(batch.info["classes"][b].tolist())) == ways
    assert batch.info["classes"].shape == (4, ways)
    assert batch.task(2).x_support.shape == (1, ways * shots, 1, 28, 28)


def test_support_and_query_are_different_drawings_of_the_labelled_character(images):
    family = OmniglotTasks(images, "train", ways=5)
    k, q = 3, 7
    batch = family.sample(6, shots=k, queries=q, seed=1)
    sd, qd, chars = batch.info["support_drawers"], batch.info["query_drawers"], batch.info["characters"]
    x = images.as_float()
    for b in range(6):
        for label in range(5):
            assert not set(sd[b, label].tolist()) & set(qd[b, label].tolist())
            c = chars[b, label]
            assert torch.equal(batch.x_support[b][batch.y_support[b] == label][:, 0], x[c, sd[b, label]])
            assert torch.equal(batch.x_query[b][batch.y_query[b] == label][:, 0], x[c, qd[b, label]])


def test_labels_are_a_fresh_permutation_in_every_episode(images):
    batch = OmniglotTasks(images, "val", ways=5).sample(300, shots=1, queries=1, seed=2)
    labels_of = {}
    for b in range(300):
        for label, c in enumerate(batch.info["classes"][b].tolist()):
            labels_of.setdefault(c, set()).add(label)
    assert len(labels_of) == 22
    assert all(len(v) > 1 for v in labels_of.values())              # every class got several labels
    orders = {tuple(row) for row in batch.info["classes"].tolist()}
    assert len(orders) > 250


def test_same_seed_same_episode_different_seed_different(images):
    family = OmniglotTasks(images, "train", ways=5)
    a, b, c = (family.sample(3, shots=2, queries=2, seed=s) for s in (7, 7, 8))
    for name in ("x_support", "y_support", "x_query", "y_query"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert all(torch.equal(a.info[k], b.info[k]) for k in a.info)
    assert not torch.equal(a.info["classes"], c.info["classes"])
    assert not torch.equal(a.x_support, c.x_support)
    g = ml.make_generator(7)
    first, second = family.sample(3, generator=g), family.sample(3, generator=g)
    assert not torch.equal(first.x_query, second.x_query)           # a generator continues its stream


def test_rotations_are_new_classes_of_the_train_split_only(images):
    plain = OmniglotTasks(images, "train", ways=5)
    rotated = OmniglotTasks(images, "train", ways=5, rotations=True)
    assert rotated.n_classes == 4 * plain.n_classes == 4 * 161 and rotated.n_characters == 161
    assert plain.sample(50, seed=0).info["rotations"].eq(0).all()
    batch = rotated.sample(50, shots=2, queries=1, seed=0)
    turns = batch.info["rotations"]
    assert set(turns.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(rotated.class_rotations[batch.info["classes"]], turns)
    x = images.as_float()
    b, label = (turns == 1).nonzero()[0].tolist()
    c, d = batch.info["characters"][b, label], batch.info["support_drawers"][b, label]
    assert torch.equal(batch.x_support[b][batch.y_support[b] == label][:, 0], torch.rot90(x[c, d], 1, (-2, -1)))
    for split in ("val", "test"):
        with pytest.raises(ConfigError) as e:
            OmniglotTasks(images, split, rotations=True)
        assert "rotations" in one_line(e)


def test_family_attributes_and_loss(images):
    family = OmniglotTasks(images, "test", ways=4)
    assert isinstance(family, ml.TaskFamily) and family.name == "omniglot" and family.metric == "accuracy"
    assert family.in_features == (1, 28, 28) and family.out_features == 4
    logits, labels = torch.zeros(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.isclose(family.loss(logits, labels), torch.log(torch.tensor(4.0)))
    sharp = 50 * torch.nn.functional.one_hot(labels, 4).float()
    assert family.loss(sharp, labels) < 1e-6 and accuracy(sharp, labels) == 1.0
    assert accuracy(sharp.roll(1, dims=1), labels) == 0.0
    assert torch.isclose(cross_entropy_loss(logits[None], labels[None]), family.loss(logits, labels))


@pytest.mark.parametrize("make, words", [
    (lambda im: OmniglotTasks(im, "val", ways=23), "only 22 classes"),
    (lambda im: OmniglotTasks(im, "train", ways=1), "ways"),
    (lambda im: OmniglotTasks(im, "validation"), "unknown split"),
    (lambda im: OmniglotTasks(im.images, "train"), "load_omniglot"),
    (lambda im: OmniglotTasks(im, "train").sample(2, shots=5, queries=16), "shots + queries"),
    (lambda im: OmniglotTasks(im, "train").sample(2, shots=0), "K"),
    (lambda im: OmniglotTasks(im, "train", splits={"train": ["Greek"]}), "in no split"),
    (lambda im: OmniglotTasks(im, "train", splits={**SPLITS, "val": ("Greek",)}), "both"),
])
def test_bad_episode_settings(images, make, words):
    with pytest.raises(ConfigError) as e:
        make(images)
    assert words in one_line(e)


def test_a_split_absent_from_the_loaded_archives(small1):
    with pytest.raises(ConfigError) as e:                             # Sanskrit is only in small2
        OmniglotTasks(small1, "test")
    assert "no characters" in one_line(e)
    assert OmniglotTasks(small1, "val").sample(1, shots=1, queries=1).x_support.shape == (1, 5, 1, 14, 14)


# ---- the one-shot runs ----------------------------------------------------------------------------------------

def handmade_runs():
    """Three 4-way runs whose test images are copies of the training image they belong to."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i, answers in enumerate(([0, 1, 2, 3], [3, 2, 1, 0], [0, 0, 1, 1])):
        train = torch.rand(4, 1, 3, 3, generator=g)
        answers = torch.tensor(answers)
        out.append(data.OneShotRun(f"run{i + 1:02d}", train, train[answers].clone(), answers))
    return out


def nearest(train, test):
    return torch.cdist(test.flatten(1), train.flatten(1)).argmin(1)


def test_scoring_handmade_runs():
    runs = handmade_runs()
    perfect = data.score_oneshot(runs, nearest)
    assert perfect.run_errors == [0.0, 0.0, 0.0] and perfect.mean_error == 0.0
    zeros = data.score_oneshot(runs, lambda train, test: torch.zeros(test.shape[0], dtype=torch.long))
    # answers [0,1,2,3]: 3 of 4 wrong; [3,2,1,0]: 3 of 4 wrong; [0,0,1,1]: 2 of 4 wrong
    assert zeros.run_errors == [0.75, 0.75, 0.5]
    assert zeros.mean_error == pytest.approx(2 / 3) and zeros.error_percent == pytest.approx(200 / 3)
    assert [p.tolist() for p in zeros.predictions] == [[0] * 4] * 3


@pytest.mark.parametrize("predict, words", [
    (lambda train, test: torch.zeros(test.shape[0]), "dtype"),
    (lambda train, test: torch.zeros(3, dtype=torch.long), "shape [3]"),
    (lambda train, test: torch.full((test.shape[0],), 4), "values from 4 to 4"),
    (lambda train, test: -torch.ones(test.shape[0], dtype=torch.long), "values from -1"),
])
def test_scoring_rejects_bad_predictions(predict, words):
    with pytest.raises(ConfigError) as e:
        data.score_oneshot(handmade_runs(), predict)
    assert words in one_line(e)


def test_scoring_no_runs():
    with pytest.raises(ConfigError):
        data.score_oneshot([], nearest)


def test_the_official_runs(runs):
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 21)]
    for r in runs:
        assert r.train.shape == r.test.shape == (20, 1, 28, 28) and r.train.dtype == torch.float32
        assert 0 <= r.train.min() and r.train.max() == 1 and r.test.max() == 1
        assert r.answers.dtype == torch.long and r.answers.shape == (20,)
        assert sorted(r.answers.tolist()) == list(range(20))          # each training image answers one item
    # run01/class_labels.txt: item01 -> class08, item20 -> class16
    assert runs[0].answers[0] == 7 and runs[0].answers[19] == 15
    answers = iter([r.answers for r in runs])
    assert data.score_oneshot(runs, lambda train, test: next(answers)).mean_error == 0.0
    # nearest neighbour on raw pixels is a poor one-shot classifier, but far better than chance (95% error)
    assert 0.6 < data.score_oneshot(runs, nearest).mean_error < 0.9


def test_errors_are_metalearn_errors():
    assert issubclass(DataError, MetaLearnError) and issubclass(DataError, ValueError)
    assert ml.DataError is DataError
