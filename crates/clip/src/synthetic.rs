//! `builtin:tiny-random`: the tiny configuration ([`ClipConfig::tiny`]) with weights generated
//! here from a seeded PRNG, so that demos and runner tests need no files.
//!
//! The init rule is the fixture script's (fan-in scaled weights, LayerNorm around 1) so that the
//! activations are not degenerate; the values differ from the fixture's (different generator).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::config::ClipConfig;
use crate::error::Result;

/// SplitMix64: tiny, seedable, and identical on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, one value per pair; speed is irrelevant here).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Gen<'a> {
    rng: Rng,
    out: HashMap<String, Tensor>,
    device: &'a Device,
}

impl Gen<'_> {
    fn put(&mut self, name: String, shape: Vec<usize>, mean: f64, std: f64) -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| (mean + std * self.rng.normal()) as f32)
            .collect();
        self.out
            .insert(name, Tensor::from_vec(data, shape, self.device)?);
        Ok(())
    }

    fn ln(&mut self, pre: &str, d: usize) -> Result<()> {
        self.put(format!("{pre}.weight"), vec![d], 1.0, 0.1)?;
        self.put(format!("{pre}.bias"), vec![d], 0.0, 0.1)
    }

    fn layers(&mut self, pre: &str, n: usize, d: usize, inter: usize) -> Result<()> {
        for i in 0..n {
            let l = format!("{pre}.encoder.layers.{i}");
            for (proj, gain) in [
                ("q_proj", 1.5),
                ("k_proj", 1.5),
                ("v_proj", 1.0),
                ("out_proj", 1.0),
            ] {
                self.put(
                    format!("{l}.self_attn.{proj}.weight"),
                    vec![d, d],
                    0.0,
                    gain * fan(d),
                )?;
                self.put(format!("{l}.self_attn.{proj}.bias"), vec![d], 0.0, 0.05)?;
            }
            self.ln(&format!("{l}.layer_norm1"), d)?;
            self.ln(&format!("{l}.layer_norm2"), d)?;
            self.put(format!("{l}.mlp.fc1.weight"), vec![inter, d], 0.0, fan(d))?;
            self.put(format!("{l}.mlp.fc1.bias"), vec![inter], 0.0, 0.05)?;
            self.put(
                format!("{l}.mlp.fc2.weight"),
                vec![d, inter],
                0.0,
                fan(inter),
            )?;
            self.put(format!("{l}.mlp.fc2.bias"), vec![d], 0.0, 0.05)?;
        }
        Ok(())
    }
}

fn fan(n: usize) -> f64 {
    1.0 / (n as f64).sqrt()
}

/// All tensors of a `CLIPModel` with `cfg`, in the Hugging Face layout, f32.
pub fn synthetic_tensors(
    cfg: &ClipConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut g = Gen {
        rng: Rng(seed),
        out: HashMap::new(),
        device,
    };
    let v = &cfg.vision_config;
    let t = &cfg.text_config;
    let (dv, dt, e, p) = (
        v.hidden_size,
        t.hidden_size,
        cfg.projection_dim,
        v.patch_size,
    );
    let base = cfg.base_grid();
    let vm = "vision_model";
    g.put(
        format!("{vm}.embeddings.patch_embedding.weight"),
        vec![dv, 3, p, p],
        0.0,
        fan(3 * p * p),
    )?;
    g.put(
        format!("{vm}.embeddings.class_embedding"),
        vec![dv],
        0.0,
        1.0,
    )?;
    g.put(
        format!("{vm}.embeddings.position_embedding.weight"),
        vec![base * base + 1, dv],
        0.0,
        0.5,
    )?;
    g.ln(&format!("{vm}.pre_layrnorm"), dv)?;
    g.layers(vm, v.num_hidden_layers, dv, v.intermediate_size)?;
    g.ln(&format!("{vm}.post_layernorm"), dv)?;
    g.put("visual_projection.weight".into(), vec![e, dv], 0.0, fan(dv))?;
    let tm = "text_model";
    g.put(
        format!("{tm}.embeddings.token_embedding.weight"),
        vec![t.vocab_size, dt],
        0.0,
        1.0,
    )?;
    g.put(
        format!("{tm}.embeddings.position_embedding.weight"),
        vec![t.max_position_embeddings, dt],
        0.0,
        0.5,
    )?;
    g.layers(tm, t.num_hidden_layers, dt, t.intermediate_size)?;
    g.ln(&format!("{tm}.final_layer_norm"), dt)?;
    g.put("text_projection.weight".into(), vec![e, dt], 0.0, fan(dt))?;
    Ok(g.out)
}
