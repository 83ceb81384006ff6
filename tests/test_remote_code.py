"""Remote code as a Hub user meets it: the encoder needs torch + transformers only (no diffusers, no fgssl), the
image processor and the feature-extraction pipeline work on it, and decoder/ loads on its own (diffusers)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from PIL import Image

from conftest import REPO_ROOT, tiny_fgssl_config
from fgssl.modeling import FGSSLForPreTraining
from fgssl.training.processor import build_image_processor

# Makes the listed top-level packages unimportable, as in a Python where they are not installed.
BLOCK = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Block())
sys.path = [p for p in sys.path if p not in ('', {repo!r})]
"""


def run_python(code, tmp_path, blocked):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    script = BLOCK.format(blocked=set(blocked), repo=str(REPO_ROOT)) + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def saved_pretraining_model(tmp_path, **kwargs):
    torch.manual_seed(0)
    model = FGSSLForPreTraining(tiny_fgssl_config("convnext", **kwargs)).eval()
    folder = tmp_path / "run"
    model.save_pretrained(folder)
    build_image_processor(32).save_pretrained(folder)
    return model, folder


def test_encoder_loads_without_diffusers_or_fgssl_and_serves_a_pipeline(tmp_path):
    model, folder = saved_pretraining_model(tmp_path)
    # The decoder file still travels with the model (the lazy import is found by transformers' scan).
    assert (folder / "decoder_fgssl.py").is_file()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    image.save(tmp_path / "bird.png")
    processor = build_image_processor(32)
    expected = model.encode(processor(images=image, return_tensors="pt")["pixel_values"]).pooler_output
    out = run_python(
        """
        import json, sys, torch
        for name in ('diffusers', 'fgssl'):
            try:
                __import__(name)
                raise SystemExit(name + ' still importable')
            except ModuleNotFoundError:
                pass
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining, pipeline
        model = AutoModel.from_pretrained('run', trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained('run')
        inputs = processor(images=Image.open('bird.png'), return_tensors='pt')
        with torch.no_grad():
            h = model(**inputs).pooler_output
        extractor = pipeline('image-feature-extraction', model='run', trust_remote_code=True, pool=True)
        pooled = extractor('bird.png')
        try:
            AutoModelForPreTraining.from_pretrained('run', trust_remote_code=True)
            decoder_error = None
        except ImportError as err:
            decoder_error = str(err)
        print(json.dumps({'h': h.tolist(), 'pooled': pooled, 'shape': list(inputs['pixel_values'].shape),
                          'diffusers_loaded': 'diffusers' in sys.modules, 'decoder_error': decoder_error}))
        """,
        tmp_path,
        blocked=("diffusers", "fgssl", "modeling", "training", "conftest"),
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["shape"] == [1, 3, 32, 32] and not result["diffusers_loaded"]
    torch.testing.assert_close(torch.tensor(result["h"]), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(result["pooled"]), expected, atol=1e-5, rtol=1e-4)
    # Only what really needs the decoder asks for diffusers, and says so.
    assert "pip install diffusers" in result["decoder_error"]


def test_moco_pretraining_model_needs_no_diffusers(tmp_path):
    _, folder = saved_pretraining_model(tmp_path, use_decoder=False)
    run_python(
        """
        from transformers import AutoModelForPreTraining
        model = AutoModelForPreTraining.from_pretrained('run', trust_remote_code=True)
        assert model.decoder is None
        """,
        tmp_path,
        blocked=("diffusers", "fgssl", "modeling", "training", "conftest"),
    )


def test_decoder_folder_loads_without_fgssl(tmp_path):
    model, _ = saved_pretraining_model(tmp_path)
    model.decoder.save_pretrained(tmp_path / "decoder")
    config = json.loads((tmp_path / "decoder" / "config.json").read_text())
    assert config["auto_map"] == {"AutoModel": "decoder_fgssl.FGSSLDecoder"}
    assert (tmp_path / "decoder" / "decoder_fgssl.py").is_file()
    config = model.decoder.config  # decodes B x C vectors or B x C x s0 x s0 maps (config.input_type)
    shape = (2, config.in_features) + ((config.base_size,) * 2 if config.input_type == "feature_map" else ())
    h = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    torch.save(h, tmp_path / "h.pt")
    run_python(
        """
        import torch
        from diffusers import AutoModel
        decoder = AutoModel.from_pretrained('decoder', trust_remote_code=True)
        assert type(decoder).__name__ == 'FGSSLDecoder', type(decoder)
        torch.save(decoder(torch.load('h.pt')), 'recon.pt')
        """,
        tmp_path,
        blocked=("fgssl", "modeling", "training", "conftest"),
    )
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "recon.pt"), model.decoder(h))
