//! Reader for CTranslate2 `model.bin` files (binary version 6).
//!
//! Layout: `u32 version`, spec name (string), `u32 revision`, `u32 variable count`, then per
//! variable: name (string), `u8 rank`, `u32 dims[rank]`, `u8 dtype`, `u32 byte count`, raw
//! little-endian data. Then `u32 alias count` and (alias, target) string pairs. A string is a
//! `u16` length that counts a trailing NUL, followed by that many bytes.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 8-bit integer (quantised weights).
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DType {
    fn from_code(code: u8) -> Result<Self> {
        Ok(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            other => return Err(Error::Format(format!("unknown dtype code {other}"))),
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named tensor, borrowing its bytes from the file.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    /// Shape, outermost first.
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Raw little-endian data.
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a scalar integer variable (such as `encoder/num_heads`).
    pub fn as_int(&self) -> Option<i64> {
        match (self.dtype, self.data) {
            (DType::I8, [a, ..]) => Some(i64::from(*a as i8)),
            (DType::I16, [a, b, ..]) => Some(i64::from(i16::from_le_bytes([*a, *b]))),
            (DType::I32, [a, b, c, d, ..]) => Some(i64::from(i32::from_le_bytes([*a, *b, *c, *d]))),
            _ => None,
        }
    }
}

/// A parsed CTranslate2 model.
#[derive(Debug)]
pub struct Model<'a> {
    /// Binary format version (6 is what we have seen).
    pub version: u32,
    /// Spec name, e.g. `WhisperSpec`.
    pub spec: String,
    /// Spec revision.
    pub revision: u32,
    /// Variables by name, aliases resolved.
    pub variables: BTreeMap<String, Variable<'a>>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                Error::Format(format!(
                    "file ends inside {what} (need {n} bytes at offset {}, file has {})",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec())
            .map_err(|_| Error::Format(format!("{what} is not valid UTF-8")))
    }
}

/// Sanity limits so a corrupt header cannot make us allocate absurd amounts.
const MAX_VARIABLES: u32 = 100_000;
const MAX_RANK: u8 = 8;

impl<'a> Model<'a> {
    /// Parses a whole `model.bin` held in memory.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut c = Cursor { bytes, pos: 0 };
        let version = c.u32("version")?;
        if !(5..=6).contains(&version) {
            return Err(Error::Format(format!(
                "binary version {version} is not supported (expected 6)"
            )));
        }
        let spec = c.string("spec name")?;
        let revision = c.u32("spec revision")?;
        let count = c.u32("variable count")?;
        if count > MAX_VARIABLES {
            return Err(Error::Format(format!("implausible variable count {count}")));
        }
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("rank")?;
            if rank > MAX_RANK {
                return Err(Error::Format(format!("{name}: implausible rank {rank}")));
            }
            let mut dims = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                dims.push(c.u32("dimension")? as usize);
            }
            let dtype = DType::from_code(c.u8("dtype")?)?;
            let nbytes = c.u32("byte count")? as usize;
            let elements: usize = dims.iter().product();
            if elements.checked_mul(dtype.size()) != Some(nbytes) {
                return Err(Error::Format(format!(
                    "{name}: {nbytes} bytes do not hold {dims:?} of {dtype:?}"
                )));
            }
            let data = c.take(nbytes, &name)?;
            variables.insert(name, Variable { dims, dtype, data });
        }
        let aliases = c.u32("alias count")?;
        if aliases > MAX_VARIABLES {
            return Err(Error::Format(format!("implausible alias count {aliases}")));
        }
        for _ in 0..aliases {
            let alias = c.string("alias name")?;
            let target = c.string("alias target")?;
            let var = variables.get(&target).cloned().ok_or_else(|| {
                Error::Format(format!("alias {alias} points at missing {target}"))
            })?;
            variables.insert(alias, var);
        }
        Ok(Self {
            version,
            spec,
            revision,
            variables,
        })
    }

    /// Looks a variable up, with a clear error when it is absent.
    pub fn get(&self, name: &str) -> Result<&Variable<'a>> {
        self.variables.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            reason: "missing from the CTranslate2 model".to_string(),
        })
    }
}

/// Serialises a model in the CTranslate2 layout. Used by tests to build small fixtures.
pub fn write_model(
    spec: &str,
    revision: u32,
    vars: &[(&str, Vec<usize>, DType, Vec<u8>)],
) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    put_str(&mut out, spec);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, dims, dtype, data) in vars {
        put_str(&mut out, name);
        out.push(dims.len() as u8);
        for d in dims {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(match dtype {
            DType::F32 => 0,
            DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 => 3,
            DType::F16 => 4,
            DType::Bf16 => 5,
        });
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_resolves_aliases() {
        let mut bytes = write_model(
            "WhisperSpec",
            3,
            &[
                ("a/weight", vec![2, 3], DType::F16, vec![0; 12]),
                (
                    "encoder/num_heads",
                    vec![],
                    DType::I16,
                    6i16.to_le_bytes().to_vec(),
                ),
            ],
        );
        // Replace the empty alias table with one alias.
        bytes.truncate(bytes.len() - 4);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        for s in ["b/weight", "a/weight"] {
            bytes.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            bytes.extend_from_slice(s.as_bytes());
            bytes.push(0);
        }
        let model = Model::parse(&bytes).expect("parse");
        assert_eq!(model.spec, "WhisperSpec");
        assert_eq!(model.revision, 3);
        assert_eq!(model.get("b/weight").expect("alias").dims, vec![2, 3]);
        assert_eq!(
            model.get("encoder/num_heads").expect("heads").as_int(),
            Some(6)
        );
    }

    #[test]
    fn truncated_or_lying_files_are_errors() {
        let bytes = write_model("WhisperSpec", 3, &[("a", vec![4], DType::F32, vec![0; 16])]);
        for cut in [0, 3, 10, 30, bytes.len() - 5] {
            assert!(Model::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let lying = write_model("WhisperSpec", 3, &[("a", vec![5], DType::F32, vec![0; 16])]);
        assert!(Model::parse(&lying).is_err());
        assert!(Model::parse(b"not a model at all").is_err());
    }
}
