"""transformers encoders: a padded batch of real clips equals each clip alone, for every family.

Tiny randomly initialised models (hidden size 32, 2 layers) built from their configs and saved to a
folder, as a real checkpoint would be; real FSDD clips of different lengths, resampled to 16 kHz.
"""

import json
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from audit import audio  # noqa: E402
from audit.encoders import transformers as hf  # noqa: E402
from audit.errors import UserError  # noqa: E402

CLIPS = ("0_jackson_0.wav", "7_yweweler_3.wav", "3_nicolas_2.wav")  # 0.64, 0.42, 0.26 s at 8 kHz
TOLERANCE = 1e-4  # relative; measured < 1e-6
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
# 3 conv layers with strides 5 x 8 x 8 = 320 samples per frame, as the real models' 7 layers
CONV = dict(conv_dim=(32, 32, 32), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, vocab_size=12)


def _wav2vec2_extractor(mask=True, rate=16_000):
    return transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0,
                                                 do_normalize=True, return_attention_mask=mask)


def _build(kind):
    """(model, feature extractor) of one family, tiny and random (seeded)."""
    torch.manual_seed(0)
    if kind == "wav2vec2":  # the *-large layout: layer-norm conv encoder, stable layer norm
        config = transformers.Wav2Vec2Config(**TINY, **CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
        return transformers.Wav2Vec2Model(config), _wav2vec2_extractor()
    if kind == "wav2vec2-base":  # group-norm conv encoder, trained without an attention mask
        config = transformers.Wav2Vec2Config(**TINY, **CONV, feat_extract_norm="group", do_stable_layer_norm=False)
        return transformers.Wav2Vec2Model(config), _wav2vec2_extractor(mask=False)
    if kind == "hubert":
        config = transformers.HubertConfig(**TINY, **CONV, feat_extract_norm="layer", do_stable_layer_norm=False)
        return transformers.HubertModel(config), _wav2vec2_extractor()
    if kind == "wavlm":
        config = transformers.WavLMConfig(**TINY, **CONV, feat_extract_norm="layer", do_stable_layer_norm=True,
                                          num_buckets=32, max_bucket_distance=64)
        return transformers.WavLMModel(config), _wav2vec2_extractor()
    if kind == "whisper":
        config = transformers.WhisperConfig(
            d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=80, max_source_positions=1500,
            max_target_positions=16, vocab_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)
        return transformers.WhisperForConditionalGeneration(config), transformers.WhisperFeatureExtractor()
    if kind == "ast":
        config = transformers.ASTConfig(**TINY, patch_size=16, frequency_stride=10, time_stride=10, max_length=1024,
                                        num_mel_bins=128)
        return transformers.ASTForAudioClassification(config), transformers.ASTFeatureExtractor()
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """kind -> a folder holding a saved tiny model and its feature extractor, built on first use."""
    built = {}

    def folder(kind):
        if kind not in built:
            path = tmp_path_factory.mktemp(kind)
            model, extractor = _build(kind)
            model.save_pretrained(path)
            extractor.save_pretrained(path)
            built[kind] = path
        return built[kind]

    return folder


@pytest.fixture(scope="module")
def clips(fsdd_dir):
    return [audio.load(str(fsdd_dir / name)) for name in CLIPS]  # 3 x (T_i,) 16 kHz


def _pad(clips):
    """A zero-padded batch (B, T) and relative lengths (B,), as audit.batching makes them."""
    longest = max(len(c) for c in clips)
    wavs = torch.zeros(len(clips), longest)
    for b, c in enumerate(clips):
        wavs[b, : len(c)] = c
    return wavs, torch.tensor([len(c) / longest for c in clips], dtype=torch.float32)


def _relative(a, b):
    return float((a - b).norm() / b.norm())


def _assert_batch_equals_alone(encoder, clips):
    wavs, lens = _pad(clips)
    batch = encoder.encode(wavs, lens)  # (B, D)
    assert batch.shape == (len(clips), encoder.dim) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    for b, clip in enumerate(clips):
        alone = encoder.encode(clip[None], torch.ones(1))[0]  # (D,)
        assert _relative(batch[b], alone) < TOLERANCE, (b, _relative(batch[b], alone))
    assert _relative(batch[0], batch[1]) > 0.01  # different clips: the test can tell rows apart
    return batch


@pytest.mark.parametrize("kind, layer", [("wav2vec2", "last"), ("wav2vec2", 1), ("wav2vec2-base", "last"),
                                         ("hubert", "last"), ("wavlm", "mean"), ("whisper", "last"),
                                         ("whisper", 0), ("ast", "last"), ("ast", "mean"), ("ast", 1)])
def test_a_padded_batch_equals_each_clip_alone(folders, clips, kind, layer):
    encoder = hf.load_hf_encoder(folders(kind), layer=layer)
    assert encoder.sample_rate == 16_000 and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    _assert_batch_equals_alone(encoder, clips)


def test_group_norm_models_batch_equal_lengths_together(folders, clips):
    encoder = hf.load_hf_encoder(folders("wav2vec2-base"))
    assert encoder.group_norm
    same = [clips[0][: len(clips[1])], clips[1], clips[2]]  # two clips of one length, one shorter
    _assert_batch_equals_alone(encoder, same)


def test_zero_padding_would_change_a_group_norm_model(folders, clips):
    """Why group-norm models are grouped by length: zero padding alone moves the embedding."""
    encoder = hf.load_hf_encoder(folders("wav2vec2-base"))
    short = clips[2]
    padded = torch.cat([short, torch.zeros(len(clips[0]) - len(short))])  # (T,) as a batch row would be
    alone, as_row = encoder.encode(short[None], torch.ones(1))[0], encoder.encode(padded[None], torch.ones(1))[0]
    assert _relative(as_row, alone) > 100 * TOLERANCE


def test_frames_pooled_are_the_valid_ones(folders, clips):
    encoder = hf.load_hf_encoder(folders("wav2vec2"))
    n = torch.tensor([len(c) for c in clips])
    alone = [encoder.model(c[None]).last_hidden_state.shape[1] for c in clips]  # frames of each clip unpadded
    assert encoder.model._get_feat_extract_output_lengths(n).tolist() == alone
    whisper = hf.load_hf_encoder(folders("whisper"))
    clip = clips[0]  # 10,296 samples: ceil(10,296 / 320) = 33 encoder frames of the 1,500
    features = whisper.extractor([clip.numpy()], sampling_rate=16_000, return_tensors="pt")["input_features"]
    states = whisper.model(features).last_hidden_state[0]  # (1500, C)
    pooled = whisper.encode(clip[None], torch.ones(1))[0]  # (C,)
    torch.testing.assert_close(pooled, states[:33].mean(0))
    assert _relative(pooled, states[:34].mean(0)) > 1e-3 and _relative(pooled, states.mean(0)) > 1e-2
    full = torch.zeros(1, 40 * 16_000)  # 40 s: cut to 30 s, all 1,500 frames are the clip's
    assert whisper.encode(full, torch.ones(1)).shape == (1, 32)


def test_layer_selection(folders, clips):
    wavs, lens = _pad(clips)
    by_layer = {layer: hf.load_hf_encoder(folders("wav2vec2"), layer=layer).encode(wavs, lens)
                for layer in ("last", "mean", 0, 1, 2, "-1")}
    assert _relative(by_layer[0], by_layer["last"]) > 0.01
    assert _relative(by_layer[1], by_layer[2]) > 0.01
    torch.testing.assert_close(by_layer["-1"], by_layer[2])  # a string index (from the CLI) works too
    torch.testing.assert_close(by_layer["mean"], (by_layer[0] + by_layer[1] + by_layer[2]) / 3)
    # stable layer norm: the last hidden state is the final layer norm's output, not the last layer's
    assert _relative(by_layer["last"], by_layer[2]) > 0.01


@pytest.mark.parametrize("layer", [3, -4, "first", "2.5"])
def test_a_bad_layer_is_one_clear_line(folders, layer):
    with pytest.raises(UserError, match=r"layer .* is none of last, mean or a hidden state index 0\.\.2"):
        hf.load_hf_encoder(folders("wav2vec2"), layer=layer)


def test_ast_layer_0_is_refused(folders):
    with pytest.raises(UserError, match=r"layer 0 of AST .*\(the same for every clip\)"):
        hf.load_hf_encoder(folders("ast"), layer=0)


def test_a_non_16khz_feature_extractor_is_refused(tmp_path, folders):
    model_dir = folders("wav2vec2")
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(model_dir / name)
    _wav2vec2_extractor(rate=8_000).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="expects 8000 Hz audio; audit decodes clips at 16000 Hz"):
        hf.load_hf_encoder(tmp_path)


def test_missing_transformers_says_how_to_get_it(monkeypatch, folders):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(UserError, match=r"needs the optional extra: pip install -e '\.\[hf\]'"):
        hf.load_hf_encoder(folders("wav2vec2"), source="my/model")


def test_which_folders_are_transformers_models(tmp_path, folders):
    assert hf.is_transformers_folder(folders("wav2vec2")) and hf.model_type(folders("ast")) in hf.SUPPORTED
    assert not hf.is_transformers_folder(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    assert not hf.is_transformers_folder(tmp_path)
    with pytest.raises(UserError, match="clap is not supported .*48 kHz"):
        hf.load_hf_encoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="model_type 'bert'; transformers audio models audit takes: wav2vec2, hubert"):
        hf.load_hf_encoder(tmp_path)


def test_the_cli_audits_with_a_transformers_encoder_and_keys_the_cache_by_layer(folders, subset_dir, tmp_path):
    """End to end through the embedding stage (Lightning predict, cache, heads, ranking) with a tiny wav2vec2."""
    import json

    from audit.cli import main

    common = ["--data", str(subset_dir), "--encoder", str(folders("wav2vec2")), "--cache-dir", str(tmp_path / "c"),
              "--devices", "1", "--no-progress", "--top", "0"]
    assert main(common + ["--out", str(tmp_path / "last")]) == 0
    summary = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert summary["n_clips"] == 200 and summary["n_embedded_now"] == 200
    assert main(common + ["--out", str(tmp_path / "mean"), "--layer", "mean"]) == 0
    again = json.loads((tmp_path / "mean" / "summary.json").read_text())
    assert again["n_embedded_now"] == 200  # another layer is another cache folder
    assert main(common + ["--out", str(tmp_path / "bad"), "--features", "frames"]) == 2
