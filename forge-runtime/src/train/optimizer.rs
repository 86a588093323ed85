//! AdamW with the schedule, global gradient-norm clipping, and skipping of non-finite steps.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};

use super::adamw::{AdamW, AdamWBackend, AdamWConfig, AdamWStateError};
use super::schedule::learning_rate;
use crate::config::TrainingConfig;
use crate::model::CausalLm;

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The gradients were not finite: weights were left as they were.
    pub skipped: bool,
}

/// AdamW over the policy's parameters (f32 state and, for parameters stored in bf16 or f16, f32
/// master weights: [`super::adamw`]).
pub struct Optimizer<B: AutodiffBackend> {
    adam: AdamW<B::InnerBackend>,
    config: TrainingConfig,
    /// Optimiser steps taken (skipped ones included, so the schedule follows the step count).
    pub step: u64,
}

impl<B: AutodiffBackend> std::fmt::Debug for Optimizer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Each gradient's sum of squares, left on the device: one read for all of them (a GPU step
/// would otherwise wait for the device once per parameter).
struct SquaredNorms<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorms<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // Squares summed in f32 whatever the gradients' type (bf16 would keep 3 digits).
            let g = if g.dtype() == DType::F32 {
                g
            } else {
                g.cast(FloatDType::F32)
            };
            self.parts.push(g.square().sum());
        }
    }
}

/// Multiplies all gradients by `factor`.
struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f32,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters.
pub fn gradient_norm<B: AutodiffBackend>(model: &CausalLm<B>, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorms::<B> {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.parts.is_empty() {
        return 0.0;
    }
    let total: f64 = Tensor::cat(visitor.parts, 0).sum().into_scalar().elem();
    total.sqrt()
}

impl<B: AutodiffBackend> Optimizer<B> {
    /// An optimiser configured by the `training` section.
    pub fn new(config: &TrainingConfig) -> Self {
        let adam = AdamW::new(AdamWConfig {
            beta1: config.adam_beta1,
            beta2: config.adam_beta2,
            eps: config.adam_eps,
            weight_decay: config.weight_decay,
        });
        Self {
            adam,
            config: config.clone(),
            step: 0,
        }
    }

    /// Saves the optimiser state (moments and master weights per parameter id) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), AdamWStateError> {
        self.adam.save(path)
    }

    /// Restores the state [`Optimizer::save`] wrote, as of optimiser step `step`.
    pub fn load(
        mut self,
        path: &Path,
        device: &B::Device,
        step: u64,
    ) -> Result<Self, AdamWStateError> {
        self.adam.load(path, device)?;
        self.step = step;
        Ok(self)
    }

    /// The same optimiser (state, step count, configuration) on `device`.
    pub fn copy_to_device(&self, device: &B::Device) -> Self {
        Self {
            adam: self.adam.copy_to_device(device),
            config: self.config.clone(),
            step: self.step,
        }
    }

    /// Counts a step whose loss was not finite, leaving the weights as they are.
    pub fn step_skipped(&mut self, model: CausalLm<B>) -> (CausalLm<B>, StepOutcome) {
        let lr = learning_rate(&self.config, self.step);
        self.step += 1;
        (
            model,
            StepOutcome {
                lr,
                grad_norm: f64::NAN,
                skipped: true,
            },
        )
    }
}

impl<B: AutodiffBackend> Optimizer<B>
where
    B::InnerBackend: AdamWBackend,
{
    /// One step: clip to `max_norm` (the global norm, like `torch.nn.utils.clip_grad_norm_`),
    /// then AdamW at the scheduled learning rate. Non-finite gradients skip the update.
    pub fn step(
        &mut self,
        model: CausalLm<B>,
        mut grads: GradientsParams,
    ) -> (CausalLm<B>, StepOutcome) {
        let lr = learning_rate(&self.config, self.step);
        self.step += 1;
        let grad_norm = gradient_norm(&model, &grads);
        if !grad_norm.is_finite() {
            return (
                model,
                StepOutcome {
                    lr,
                    grad_norm,
                    skipped: true,
                },
            );
        }
        let max = self.config.max_norm;
        if max > 0.0 && grad_norm > max {
            let mut scale = Scale::<B> {
                grads: &mut grads,
                factor: (max / (grad_norm + 1e-6)) as f32,
                _backend: std::marker::PhantomData,
            };
            model.visit(&mut scale);
        }
        let model = self.adam.step::<B, _>(lr, model, &mut grads);
        (
            model,
            StepOutcome {
                lr,
                grad_norm,
                skipped: false,
            },
        )
    }
}
