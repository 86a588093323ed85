//! Loss batches in safetensors files: what `forge loss eval` reads and writes.
//!
//! Input tensors: `logits` [B, S, V] f32, `target_ids` [B, S] i64 (-100 ignored),
//! `generator_logprobs`, `advantages`, `loss_mask` [B, S] f32, optional `ref_logprobs` [B, S] f32.
//! Output tensors: `loss` [1], `grad_logits` [B, S, V], `logprobs` [B, S], one [1] tensor per
//! metric (`loss/ratio_mean`...), all f32.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::reference::{LossBatch, LossOutput};

/// A batch file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BatchFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a safetensors file: {message}")]
    Format {
        /// The file.
        path: String,
        /// What safetensors said.
        message: String,
    },
    /// A tensor is missing, or has the wrong type or rank.
    #[error("{path}: {message}")]
    Tensor {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn tensor<'a>(
    file: &'a SafeTensors<'a>,
    path: &str,
    name: &str,
    dtype: Dtype,
    rank: usize,
) -> Result<Option<TensorView<'a>>, BatchFileError> {
    let view = match file.tensor(name) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    if view.dtype() != dtype || view.shape().len() != rank {
        return Err(BatchFileError::Tensor {
            path: path.into(),
            message: format!(
                "`{name}` must be {dtype:?} with {rank} dimensions, found {:?} {:?}",
                view.dtype(),
                view.shape()
            ),
        });
    }
    Ok(Some(view))
}

fn required<'a>(
    file: &'a SafeTensors<'a>,
    path: &str,
    name: &str,
    dtype: Dtype,
    rank: usize,
) -> Result<TensorView<'a>, BatchFileError> {
    tensor(file, path, name, dtype, rank)?.ok_or_else(|| BatchFileError::Tensor {
        path: path.into(),
        message: format!("missing tensor `{name}`"),
    })
}

fn f32s(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(view: &TensorView<'_>) -> Vec<i64> {
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect()
}

/// Reads a loss batch (shapes are checked when it is evaluated).
pub fn read_batch(path: &Path) -> Result<LossBatch, BatchFileError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BatchFileError::Io {
        path: name.clone(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| BatchFileError::Format {
        path: name.clone(),
        message: e.to_string(),
    })?;
    let logits = required(&file, &name, "logits", Dtype::F32, 3)?;
    let (batch, seq, vocab) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
    Ok(LossBatch {
        batch,
        seq,
        vocab,
        logits: f32s(&logits),
        target_ids: i64s(&required(&file, &name, "target_ids", Dtype::I64, 2)?),
        generator_logprobs: f32s(&required(
            &file,
            &name,
            "generator_logprobs",
            Dtype::F32,
            2,
        )?),
        advantages: f32s(&required(&file, &name, "advantages", Dtype::F32, 2)?),
        loss_mask: f32s(&required(&file, &name, "loss_mask", Dtype::F32, 2)?),
        ref_logprobs: tensor(&file, &name, "ref_logprobs", Dtype::F32, 2)?.map(|v| f32s(&v)),
    })
}

/// Writes the loss, its gradient, the log-probabilities and the metrics, as f32.
pub fn write_output(
    path: &Path,
    batch: &LossBatch,
    output: &LossOutput,
) -> Result<(), BatchFileError> {
    let bytes = |values: &[f64]| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![
        ("loss".into(), vec![1], bytes(&[output.loss])),
        (
            "grad_logits".into(),
            vec![batch.batch, batch.seq, batch.vocab],
            bytes(&output.grad_logits),
        ),
        (
            "logprobs".into(),
            vec![batch.batch, batch.seq],
            bytes(&output.logprobs),
        ),
    ];
    for (name, value) in &output.metrics {
        tensors.push((name.clone(), vec![1], bytes(&[*value])));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| BatchFileError::Format {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| BatchFileError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
