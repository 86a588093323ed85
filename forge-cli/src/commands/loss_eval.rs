//! `forge loss eval`: a loss and its gradient on a recorded batch.

use forge::config::{Aggregation, Override};
use forge::kernels::device_loss;
use forge::loss::{batch_file, reference, registry};
use serde_json::{Map, Value};

use crate::args::{AggregationArg, DeviceArg, LossEvalArgs};
use crate::exit::ExitStatus;

pub(crate) fn exec(args: &LossEvalArgs) -> anyhow::Result<ExitStatus> {
    let Some(registration) = registry::find(&args.loss) else {
        let known: Vec<&str> = registry::all().map(|r| r.name).collect();
        eprintln!(
            "error: unknown loss `{}`; known: {}",
            args.loss,
            known.join(", ")
        );
        return Ok(ExitStatus::Invalid);
    };
    let mut params = Map::new();
    for set in &args.set {
        match Override::parse_set(set) {
            Ok(o) if o.path.len() == 1 => {
                params.insert(o.path[0].clone(), o.value);
            }
            Ok(_) => {
                eprintln!(
                    "error: `--set {set}`: loss parameters are single names (`clip_low=0.1`)"
                );
                return Ok(ExitStatus::Invalid);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitStatus::Invalid);
            }
        }
    }
    let loss = match (registration.bind)(&params) {
        Ok(loss) => loss,
        Err(e) => {
            eprintln!("error: parameters of `{}`: {e}", args.loss);
            return Ok(ExitStatus::Invalid);
        }
    };
    let batch = batch_file::read_batch(&args.input)?;
    let aggregation = args
        .aggregation
        .map_or(registration.default_aggregation, |a| match a {
            AggregationArg::TokenMean => Aggregation::TokenMean,
            AggregationArg::SequenceMean => Aggregation::SequenceMean,
            AggregationArg::FixedHorizon => Aggregation::FixedHorizon,
        });
    let mut normalizer = batch.normalizer();
    if let Some(h) = args.horizon {
        normalizer.horizon = h;
    }
    let request = device_loss::LossRequest {
        loss: registration,
        params: &params,
        aggregation,
        batch: &batch,
        temperature: args.temperature,
        normalizer: Some(normalizer),
        path: device_loss::LossPath::Auto,
    };
    let output = match args.device {
        DeviceArg::Cpu => reference::evaluate(
            &loss,
            aggregation,
            &batch,
            args.temperature,
            Some(normalizer),
        )
        .map_err(|e| e.to_string()),
        DeviceArg::Wgpu => device_loss::evaluate_wgpu(&request).map_err(|e| e.to_string()),
        DeviceArg::Cuda => device_loss::evaluate_cuda(&request).map_err(|e| e.to_string()),
    };
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!("error: {}: {e}", args.input.display());
            return Ok(ExitStatus::Invalid);
        }
    };
    batch_file::write_output(&args.output, &batch, &output)?;
    let metrics: Map<String, Value> = output
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), (*v).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "loss": output.loss, "aggregation": aggregation.as_str(), "metrics": metrics })
    );
    Ok(ExitStatus::Success)
}
