"""The encoder families behind one interface (audit/encoders): resolving, cache keys, options per family."""

import pytest

from audit import encoders
from audit.embed import store_for
from audit.errors import UserError
from audit.options import RunOptions
from conftest import SHARED

EFFICIENTAT = SHARED / "models" / "efficientat-mn04"
WHISPER = SHARED / "models" / "whisper-tiny.en"
needs_efficientat = pytest.mark.skipif(not (EFFICIENTAT / "mn04_as_mAP_432.pt").is_file(), reason="no mn04 in ../shared")


@pytest.fixture
def efficientat(monkeypatch):
    monkeypatch.setenv("AUDIT_EFFICIENTAT_DIR", str(EFFICIENTAT))
    return encoders.resolve("efficientat:mn04_as")


@needs_efficientat
def test_each_family_says_its_rate_and_identity(efficientat, ecapa):
    speech = encoders.resolve(ecapa)
    assert (speech.family, speech.sample_rate, speech.has_steps) == ("speechbrain", 16_000, True)
    assert (efficientat.family, efficientat.sample_rate, efficientat.has_steps) == ("efficientat", 32_000, True)
    assert efficientat.identity == "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"


@needs_efficientat
def test_the_cache_key_names_family_rate_and_features(efficientat, tmp_path):
    def folder(**kw):
        return store_for(RunOptions(encoder="efficientat:mn04_as", cache_dir=str(tmp_path), **kw), efficientat)[0].folder

    from audit.cache import cache_folder

    default, frames = folder(), folder(features="frames")
    assert default != frames and default == folder(features="embedding")  # embedding is EfficientAT's default
    assert default != folder(window_seconds=5.0)
    key = dict(precision="32-true", window=10.0, hop=10.0, features="embedding")
    assert default == cache_folder(tmp_path, efficientat.name, efficientat.identity, family="efficientat",
                                   rate=32_000, **key)  # the family and its rate are part of the key


@needs_efficientat
@pytest.mark.parametrize("kw, message", [
    (dict(layer="6"), "--layer 6: for transformers encoders; efficientat:mn04_as is an EfficientAT model"),
    (dict(frames_dim=1024), "--frames-dim: for SpeechBrain frame features"),
])
def test_an_option_the_family_does_not_take_is_one_line(efficientat, kw, message, tmp_path):
    with pytest.raises(UserError, match=message):
        store_for(RunOptions(encoder="efficientat:mn04_as", cache_dir=str(tmp_path), **kw), efficientat)


def test_speechbrain_refuses_layer_and_transformers_refuse_features(ecapa, tmp_path):
    with pytest.raises(UserError, match="--layer 3: for transformers encoders"):
        store_for(RunOptions(encoder=ecapa, layer="3", cache_dir=str(tmp_path)))
    if (WHISPER / "config.json").is_file():
        with pytest.raises(UserError, match="--features frames: for SpeechBrain and EfficientAT encoders"):
            store_for(RunOptions(encoder=str(WHISPER), features="frames", cache_dir=str(tmp_path)))


@pytest.mark.skipif(not (WHISPER / "config.json").is_file(), reason="no whisper-tiny.en in ../shared")
def test_several_encoders_each_get_the_options_their_family_takes(ecapa):
    both = [encoders.resolve(ecapa), encoders.resolve(str(WHISPER))]
    speech, whisper = encoders.options_for(both, RunOptions(encoder=[ecapa, str(WHISPER)], layer="2",
                                                           features="frames"))
    assert (speech.layer, speech.features) == (None, "frames") and (whisper.layer, whisper.features) == ("2", None)
    with pytest.raises(UserError, match="--frames-dim: none of --encoders"):
        encoders.options_for(both[1:], RunOptions(encoder=str(WHISPER), frames_dim=512))


def test_denormal_weights_are_flushed_without_changing_outputs():
    """Checkpoints carry weights below float32's smallest normal (ECAPA: 73,418); they cost CPU time, not results."""
    import torch

    from audit.encoders import flush_denormals

    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32)).eval()
    with torch.no_grad():
        layer[0].weight[:, :8] = 1e-40  # dead inputs' weights, as training leaves them
        layer[1].running_var[:3] = 1e-39
    x = torch.randn(16, 64)
    before = layer(x)
    assert flush_denormals(layer) == 32 * 8 + 3
    assert flush_denormals(layer) == 0
    assert (layer[0].weight[:, :8] == 0).all() and (layer[1].running_var[:3] == 0).all()
    assert torch.allclose(layer(x), before, atol=1e-6)
