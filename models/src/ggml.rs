//! whisper.cpp's ggml model file, built from a CTranslate2 Whisper model.
//!
//! Layout: `i32 magic 0x67676d6c`, eleven `i32` hyper-parameters, the mel filter bank
//! (`i32 n_mel`, `i32 n_fft`, f32 weights), the vocabulary (`i32 count`, then `i32 len` + bytes
//! per token), then tensors: `i32 n_dims`, `i32 name length`, `i32 type` (0 f32, 1 f16), the
//! dims innermost first, the name, row-major data.

use std::io::Write;

use crate::ct2::{DType, Model, Variable};
use crate::{Error, Result};

const MAGIC: i32 = 0x6767_6d6c;

/// whisper.cpp's model hyper-parameters, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    /// Vocabulary size (rows of the token embedding).
    pub n_vocab: i32,
    /// Encoder positions (1500 = 30 s).
    pub n_audio_ctx: i32,
    /// Encoder width.
    pub n_audio_state: i32,
    /// Encoder attention heads.
    pub n_audio_head: i32,
    /// Encoder layers.
    pub n_audio_layer: i32,
    /// Decoder positions.
    pub n_text_ctx: i32,
    /// Decoder width.
    pub n_text_state: i32,
    /// Decoder attention heads.
    pub n_text_head: i32,
    /// Decoder layers.
    pub n_text_layer: i32,
    /// Mel bins.
    pub n_mels: i32,
    /// Weight type: 1 = f16.
    pub ftype: i32,
}

/// Element type of an output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// f32 (biases, norms, positional embeddings).
    F32,
    /// f16 (matrices, conv kernels, token embedding).
    F16,
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// whisper.cpp name.
    pub name: String,
    /// Shape, outermost first (written reversed).
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: TensorType,
    /// Little-endian data of that type.
    pub data: Vec<u8>,
}

/// A whole whisper.cpp model, ready to write.
#[derive(Debug)]
pub struct WhisperGgml {
    /// Header.
    pub hparams: Hparams,
    /// 80 x 201 mel filters.
    pub mel_filters: Vec<Vec<f32>>,
    /// Ordinary tokens as bytes.
    pub tokens: Vec<Vec<u8>>,
    /// Tensors in write order.
    pub tensors: Vec<Tensor>,
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let mant = u32::from(bits & 0x3ff);
    let out = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(out)
}

fn f32_to_f16(value: f32) -> u16 {
    // Round to nearest even; enough for the f32 -> f16 path, which our inputs never take
    // (both wheels store f16), but keeps the converter total.
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (mant | 0x80_0000) >> (1 - e);
        let round = (m >> 12) & 1;
        return sign | ((m >> 13) as u16 + round as u16);
    }
    let half = sign | ((e as u16) << 10) | (mant >> 13) as u16;
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        half + 1
    } else {
        half
    }
}

/// Converts a variable's elements (or a row range of them) to the wanted output type.
fn convert(
    var: &Variable<'_>,
    name: &str,
    rows: std::ops::Range<usize>,
    ty: TensorType,
) -> Result<Vec<u8>> {
    let row_len: usize = var.dims.iter().skip(1).product::<usize>().max(1);
    let (start, end) = (rows.start * row_len, rows.end * row_len);
    if end > var.len() {
        return Err(Error::Tensor {
            name: name.to_string(),
            reason: format!("rows {rows:?} exceed shape {:?}", var.dims),
        });
    }
    let size = var.dtype.size();
    let src = &var.data[start * size..end * size];
    let mut out = Vec::with_capacity((end - start) * if ty == TensorType::F16 { 2 } else { 4 });
    match (var.dtype, ty) {
        (DType::F16, TensorType::F16) | (DType::F32, TensorType::F32) => out.extend_from_slice(src),
        (DType::F16, TensorType::F32) => {
            for c in src.chunks_exact(2) {
                out.extend_from_slice(&f16_to_f32(u16::from_le_bytes([c[0], c[1]])).to_le_bytes());
            }
        }
        (DType::F32, TensorType::F16) => {
            for c in src.chunks_exact(4) {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                out.extend_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        (other, _) => {
            return Err(Error::Tensor {
                name: name.to_string(),
                reason: format!(
                    "dtype {other:?} is not supported (quantised CTranslate2 models cannot be converted)"
                ),
            });
        }
    }
    Ok(out)
}

struct Builder<'m, 'a> {
    model: &'m Model<'a>,
    tensors: Vec<Tensor>,
}

impl Builder<'_, '_> {
    /// Copies a whole variable. 1-D tensors are always f32 (whisper.cpp expects it).
    fn copy(&mut self, ct2: &str, name: &str, ty: TensorType) -> Result<()> {
        let var = self.model.get(ct2)?;
        let ty = if var.dims.len() < 2 {
            TensorType::F32
        } else {
            ty
        };
        let data = convert(var, ct2, 0..var.dims.first().copied().unwrap_or(1), ty)?;
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: var.dims.clone(),
            ty,
            data,
        });
        Ok(())
    }

    /// Copies rows `part*n..(part+1)*n` of a fused projection (q,k,v or k,v).
    fn split(
        &mut self,
        ct2: &str,
        name: &str,
        part: usize,
        parts: usize,
        ty: TensorType,
    ) -> Result<()> {
        let var = self.model.get(ct2)?;
        let total = var.dims.first().copied().unwrap_or(0);
        if total % parts != 0 {
            return Err(Error::Tensor {
                name: ct2.to_string(),
                reason: format!("{total} rows do not split into {parts} parts"),
            });
        }
        let n = total / parts;
        let ty = if var.dims.len() < 2 {
            TensorType::F32
        } else {
            ty
        };
        let data = convert(var, ct2, part * n..(part + 1) * n, ty)?;
        let mut dims = var.dims.clone();
        dims[0] = n;
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims,
            ty,
            data,
        });
        Ok(())
    }

    fn linear(&mut self, ct2: &str, name: &str) -> Result<()> {
        self.copy(
            &format!("{ct2}/weight"),
            &format!("{name}.weight"),
            TensorType::F16,
        )?;
        self.copy(
            &format!("{ct2}/bias"),
            &format!("{name}.bias"),
            TensorType::F32,
        )
    }

    fn norm(&mut self, ct2: &str, name: &str) -> Result<()> {
        self.copy(
            &format!("{ct2}/gamma"),
            &format!("{name}.weight"),
            TensorType::F32,
        )?;
        self.copy(
            &format!("{ct2}/beta"),
            &format!("{name}.bias"),
            TensorType::F32,
        )
    }

    /// A fused projection whose parts become `names` (key parts carry no bias in whisper.cpp).
    fn fused(&mut self, ct2: &str, names: &[(&str, bool)]) -> Result<()> {
        for (i, (name, has_bias)) in names.iter().enumerate() {
            self.split(
                &format!("{ct2}/weight"),
                &format!("{name}.weight"),
                i,
                names.len(),
                TensorType::F16,
            )?;
            if *has_bias {
                self.split(
                    &format!("{ct2}/bias"),
                    &format!("{name}.bias"),
                    i,
                    names.len(),
                    TensorType::F32,
                )?;
            }
        }
        Ok(())
    }

    fn self_attention(&mut self, ct2: &str, name: &str) -> Result<()> {
        self.fused(
            &format!("{ct2}/linear_0"),
            &[
                (&format!("{name}.query"), true),
                (&format!("{name}.key"), false),
                (&format!("{name}.value"), true),
            ],
        )?;
        self.linear(&format!("{ct2}/linear_1"), &format!("{name}.out"))
    }

    fn ffn(&mut self, ct2: &str, block: &str) -> Result<()> {
        self.linear(&format!("{ct2}/linear_0"), &format!("{block}.mlp.0"))?;
        self.linear(&format!("{ct2}/linear_1"), &format!("{block}.mlp.2"))?;
        self.norm(&format!("{ct2}/layer_norm"), &format!("{block}.mlp_ln"))
    }
}

fn count_layers(model: &Model<'_>, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            model
                .variables
                .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
        })
        .count()
}

fn dim(model: &Model<'_>, name: &str, axis: usize) -> Result<i32> {
    let var = model.get(name)?;
    var.dims
        .get(axis)
        .and_then(|d| i32::try_from(*d).ok())
        .ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            reason: format!("has no axis {axis} (shape {:?})", var.dims),
        })
}

fn heads(model: &Model<'_>, prefix: &str, state: i32) -> i32 {
    // CTranslate2 stores the head count; every Whisper size uses 64-wide heads otherwise.
    model
        .variables
        .get(&format!("{prefix}/num_heads"))
        .and_then(Variable::as_int)
        .and_then(|h| i32::try_from(h).ok())
        .unwrap_or(state / 64)
}

impl WhisperGgml {
    /// Maps every CTranslate2 variable whisper.cpp needs onto its ggml tensor.
    pub fn from_ct2(model: &Model<'_>, tokens: Vec<Vec<u8>>) -> Result<Self> {
        if model.spec != "WhisperSpec" {
            return Err(Error::Format(format!(
                "spec {} is not a Whisper model",
                model.spec
            )));
        }
        let n_audio_layer = count_layers(model, "encoder");
        let n_text_layer = count_layers(model, "decoder");
        if n_audio_layer == 0 || n_text_layer == 0 {
            return Err(Error::Format(
                "no encoder or decoder layers found".to_string(),
            ));
        }
        let n_audio_state = dim(model, "encoder/position_encodings/encodings", 1)?;
        let n_text_state = dim(model, "decoder/position_encodings/encodings", 1)?;
        let hparams = Hparams {
            n_vocab: dim(model, "decoder/embeddings/weight", 0)?,
            n_audio_ctx: dim(model, "encoder/position_encodings/encodings", 0)?,
            n_audio_state,
            n_audio_head: heads(model, "encoder", n_audio_state),
            n_audio_layer: n_audio_layer as i32,
            n_text_ctx: dim(model, "decoder/position_encodings/encodings", 0)?,
            n_text_state,
            n_text_head: heads(model, "decoder", n_text_state),
            n_text_layer: n_text_layer as i32,
            n_mels: dim(model, "encoder/conv1/weight", 1)?,
            ftype: 1,
        };
        if tokens.len() > hparams.n_vocab as usize {
            return Err(Error::Vocab(format!(
                "{} ordinary tokens but the embedding has {} rows",
                tokens.len(),
                hparams.n_vocab
            )));
        }

        let mut b = Builder {
            model,
            tensors: Vec::new(),
        };
        for conv in ["conv1", "conv2"] {
            b.copy(
                &format!("encoder/{conv}/weight"),
                &format!("encoder.{conv}.weight"),
                TensorType::F16,
            )?;
            b.copy(
                &format!("encoder/{conv}/bias"),
                &format!("encoder.{conv}.bias"),
                TensorType::F32,
            )?;
            // whisper.cpp wants conv biases shaped (n, 1).
            if let Some(t) = b.tensors.last_mut() {
                t.dims.push(1);
            }
        }
        b.copy(
            "encoder/position_encodings/encodings",
            "encoder.positional_embedding",
            TensorType::F32,
        )?;
        for i in 0..n_audio_layer {
            let (src, dst) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
            b.self_attention(&format!("{src}/self_attention"), &format!("{dst}.attn"))?;
            b.norm(
                &format!("{src}/self_attention/layer_norm"),
                &format!("{dst}.attn_ln"),
            )?;
            b.ffn(&format!("{src}/ffn"), &dst)?;
        }
        b.norm("encoder/layer_norm", "encoder.ln_post")?;

        b.copy(
            "decoder/embeddings/weight",
            "decoder.token_embedding.weight",
            TensorType::F16,
        )?;
        b.copy(
            "decoder/position_encodings/encodings",
            "decoder.positional_embedding",
            TensorType::F32,
        )?;
        for i in 0..n_text_layer {
            let (src, dst) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
            b.self_attention(&format!("{src}/self_attention"), &format!("{dst}.attn"))?;
            b.norm(
                &format!("{src}/self_attention/layer_norm"),
                &format!("{dst}.attn_ln"),
            )?;
            b.linear(
                &format!("{src}/attention/linear_0"),
                &format!("{dst}.cross_attn.query"),
            )?;
            b.fused(
                &format!("{src}/attention/linear_1"),
                &[
                    (&format!("{dst}.cross_attn.key"), false),
                    (&format!("{dst}.cross_attn.value"), true),
                ],
            )?;
            b.linear(
                &format!("{src}/attention/linear_2"),
                &format!("{dst}.cross_attn.out"),
            )?;
            b.norm(
                &format!("{src}/attention/layer_norm"),
                &format!("{dst}.cross_attn_ln"),
            )?;
            b.ffn(&format!("{src}/ffn"), &dst)?;
        }
        b.norm("decoder/layer_norm", "decoder.ln")?;

        Ok(Self {
            hparams,
            mel_filters: crate::mel::librosa_slaney(16_000, 400, hparams.n_mels as usize),
            tokens,
            tensors: b.tensors,
        })
    }

    /// Writes the ggml file.
    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let i32s = |w: &mut dyn Write, v: &[i32]| -> std::io::Result<()> {
            for x in v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        };
        let h = &self.hparams;
        i32s(
            w,
            &[
                MAGIC,
                h.n_vocab,
                h.n_audio_ctx,
                h.n_audio_state,
                h.n_audio_head,
                h.n_audio_layer,
                h.n_text_ctx,
                h.n_text_state,
                h.n_text_head,
                h.n_text_layer,
                h.n_mels,
                h.ftype,
            ],
        )?;
        let n_fft = self.mel_filters.first().map_or(0, Vec::len);
        i32s(w, &[self.mel_filters.len() as i32, n_fft as i32])?;
        for row in &self.mel_filters {
            for v in row {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        i32s(w, &[self.tokens.len() as i32])?;
        for t in &self.tokens {
            i32s(w, &[t.len() as i32])?;
            w.write_all(t)?;
        }
        for t in &self.tensors {
            let ty = match t.ty {
                TensorType::F32 => 0,
                TensorType::F16 => 1,
            };
            i32s(w, &[t.dims.len() as i32, t.name.len() as i32, ty])?;
            let reversed: Vec<i32> = t.dims.iter().rev().map(|d| *d as i32).collect();
            i32s(w, &reversed)?;
            w.write_all(t.name.as_bytes())?;
            w.write_all(&t.data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct2::write_model;

    fn f16s(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| f32_to_f16(i as f32).to_le_bytes())
            .collect()
    }

    /// A one-layer Whisper with width 64 laid out as CTranslate2 writes it.
    fn tiny_ct2() -> Vec<u8> {
        let d = 64;
        let mut vars: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
        let mut add = |name: &str, dims: Vec<usize>| {
            let n = dims.iter().product();
            vars.push((name.to_string(), dims, DType::F16, f16s(n)));
        };
        add("encoder/conv1/weight", vec![d, 80, 3]);
        add("encoder/conv1/bias", vec![d]);
        add("encoder/conv2/weight", vec![d, d, 3]);
        add("encoder/conv2/bias", vec![d]);
        add("encoder/position_encodings/encodings", vec![1500, d]);
        add("decoder/position_encodings/encodings", vec![448, d]);
        add("decoder/embeddings/weight", vec![10, d]);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            add(
                &format!("{l}/self_attention/linear_0/weight"),
                vec![3 * d, d],
            );
            add(&format!("{l}/self_attention/linear_0/bias"), vec![3 * d]);
            add(&format!("{l}/self_attention/linear_1/weight"), vec![d, d]);
            add(&format!("{l}/self_attention/linear_1/bias"), vec![d]);
            add(&format!("{l}/self_attention/layer_norm/gamma"), vec![d]);
            add(&format!("{l}/self_attention/layer_norm/beta"), vec![d]);
            add(&format!("{l}/ffn/linear_0/weight"), vec![4 * d, d]);
            add(&format!("{l}/ffn/linear_0/bias"), vec![4 * d]);
            add(&format!("{l}/ffn/linear_1/weight"), vec![d, 4 * d]);
            add(&format!("{l}/ffn/linear_1/bias"), vec![d]);
            add(&format!("{l}/ffn/layer_norm/gamma"), vec![d]);
            add(&format!("{l}/ffn/layer_norm/beta"), vec![d]);
            add(&format!("{side}/layer_norm/gamma"), vec![d]);
            add(&format!("{side}/layer_norm/beta"), vec![d]);
        }
        let l = "decoder/layer_0/attention";
        add(&format!("{l}/linear_0/weight"), vec![d, d]);
        add(&format!("{l}/linear_0/bias"), vec![d]);
        add(&format!("{l}/linear_1/weight"), vec![2 * d, d]);
        add(&format!("{l}/linear_1/bias"), vec![2 * d]);
        add(&format!("{l}/linear_2/weight"), vec![d, d]);
        add(&format!("{l}/linear_2/bias"), vec![d]);
        add(&format!("{l}/layer_norm/gamma"), vec![d]);
        add(&format!("{l}/layer_norm/beta"), vec![d]);
        let refs: Vec<(&str, Vec<usize>, DType, Vec<u8>)> = vars
            .iter()
            .map(|(n, d, t, b)| (n.as_str(), d.clone(), *t, b.clone()))
            .collect();
        write_model("WhisperSpec", 3, &refs)
    }

    #[test]
    fn maps_every_tensor_whisper_cpp_needs() {
        let bytes = tiny_ct2();
        let model = Model::parse(&bytes).expect("parse");
        let g = WhisperGgml::from_ct2(&model, vec![b"a".to_vec()]).expect("convert");
        // whisper.cpp: 4 conv + 1 pos + 15 per encoder block + 2 ln_post, 2 embeddings
        // + 24 per decoder block + 2 ln.
        assert_eq!(g.tensors.len(), 4 + 1 + 15 + 2 + 2 + 24 + 2);
        assert_eq!(g.hparams.n_audio_head, 1);
        assert_eq!(g.hparams.n_audio_layer, 1);
        let find = |n: &str| g.tensors.iter().find(|t| t.name == n).expect(n);
        // Key projections lose their (zero) bias; q/k/v split the fused rows.
        assert!(
            g.tensors
                .iter()
                .all(|t| t.name != "encoder.blocks.0.attn.key.bias")
        );
        let key = find("encoder.blocks.0.attn.key.weight");
        assert_eq!(key.dims, vec![64, 64]);
        assert_eq!(key.ty, TensorType::F16);
        let first_key = u16::from_le_bytes([key.data[0], key.data[1]]);
        assert_eq!(
            f16_to_f32(first_key),
            (64 * 64) as f32,
            "rows 64..128 of the fused weight"
        );
        let bias = find("encoder.conv1.bias");
        assert_eq!((bias.dims.clone(), bias.ty), (vec![64, 1], TensorType::F32));
        assert_eq!(find("decoder.positional_embedding").ty, TensorType::F32);
        let mut out = Vec::new();
        g.write(&mut out).expect("write");
        assert_eq!(&out[..4], &MAGIC.to_le_bytes());
    }

    #[test]
    fn half_float_round_trips() {
        for v in [0.0f32, 1.0, -2.5, 65504.0, 6.1e-5, 1e-7] {
            let back = f16_to_f32(f32_to_f16(v));
            assert!((back - v).abs() <= v.abs() * 1e-3 + 1e-7, "{v} -> {back}");
        }
    }

    #[test]
    fn missing_tensors_are_named() {
        let bytes = write_model("WhisperSpec", 3, &[]);
        let model = Model::parse(&bytes).expect("parse");
        let err = WhisperGgml::from_ct2(&model, vec![]).expect_err("empty model");
        assert!(err.to_string().contains("layers"), "{err}");
    }
}
