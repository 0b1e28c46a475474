//! The logistic model: weights over standardized features, read from a versioned JSON
//! file, giving a score 0..=1000 and each feature's contribution (the reasons).

use serde::Deserialize;

use super::features::{Feature, FEATURE_COUNT};
use super::FraudError;

/// The only model file format this engine reads.
pub const MODEL_FORMAT: &str = "quickpay-fraud-model";
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// Scores are `round(1000 * probability)`.
pub const SCORE_MAX: u16 = 1000;

/// A model file as written by `quickpay fraud train`:
///
/// ```json
/// {"format": "quickpay-fraud-model", "format_version": 1, "model_id": "...",
///  "features": ["log_amount", ...], "mean": [...], "scale": [...],
///  "weights": [...], "bias": -4.2,
///  "thresholds": {"review": 500, "decline": 900}}
/// ```
///
/// A feature the engine computes but the file does not name gets weight 0; a name the
/// engine does not know is an error (the model was trained on another engine).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    format_version: u32,
    model_id: String,
    features: Vec<String>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
    thresholds: Thresholds,
    /// Free-form training facts (seed, sizes, metrics); kept out of scoring.
    #[serde(default)]
    #[allow(dead_code)]
    trained: serde_json::Value,
}

/// Score thresholds: at or above `review` the payment is reviewed, at or above
/// `decline` it is declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub review: u16,
    pub decline: u16,
}

impl Thresholds {
    /// Checks `review <= decline <= SCORE_MAX + 1` (`SCORE_MAX + 1` disables a level).
    pub fn check(self) -> Result<Thresholds, FraudError> {
        if self.review > self.decline || self.decline > SCORE_MAX + 1 {
            return Err(FraudError::Model(format!(
                "thresholds must satisfy review <= decline <= {}: got {self:?}",
                SCORE_MAX + 1
            )));
        }
        Ok(self)
    }
}

/// A loaded model: per engine feature, `weight / scale` and `mean` (so scoring is one
/// multiply-add per feature).
#[derive(Clone, Debug)]
pub struct Model {
    pub model_id: String,
    mean: [f64; FEATURE_COUNT],
    coef: [f64; FEATURE_COUNT],
    bias: f64,
    pub thresholds: Thresholds,
}

impl Model {
    /// Parses and checks a model file.
    pub fn from_json(text: &str) -> Result<Model, FraudError> {
        let file: ModelFile = serde_json::from_str(text)
            .map_err(|e| FraudError::Model(format!("model JSON: {e}")))?;
        if file.format != MODEL_FORMAT || file.format_version != MODEL_FORMAT_VERSION {
            return Err(FraudError::Model(format!(
                "model format {:?} version {} is not {MODEL_FORMAT:?} version {MODEL_FORMAT_VERSION}",
                file.format, file.format_version
            )));
        }
        let n = file.features.len();
        if file.mean.len() != n || file.scale.len() != n || file.weights.len() != n {
            return Err(FraudError::Model(format!(
                "model has {n} features but {} means, {} scales, {} weights",
                file.mean.len(),
                file.scale.len(),
                file.weights.len()
            )));
        }
        let mut model = Model {
            model_id: file.model_id,
            mean: [0.0; FEATURE_COUNT],
            coef: [0.0; FEATURE_COUNT],
            bias: file.bias,
            thresholds: file.thresholds.check()?,
        };
        if !file.bias.is_finite() {
            return Err(FraudError::Model("model bias is not finite".into()));
        }
        let mut seen = [false; FEATURE_COUNT];
        for (i, name) in file.features.iter().enumerate() {
            let feature = Feature::from_name(name).ok_or_else(|| {
                FraudError::Model(format!("model names unknown feature {name:?}"))
            })?;
            let f = feature as usize;
            if std::mem::replace(&mut seen[f], true) {
                return Err(FraudError::Model(format!(
                    "model names feature {name:?} twice"
                )));
            }
            let (mean, scale, weight) = (file.mean[i], file.scale[i], file.weights[i]);
            if !(mean.is_finite() && weight.is_finite() && scale.is_finite() && scale > 0.0) {
                return Err(FraudError::Model(format!(
                    "feature {name:?}: mean and weight must be finite and scale positive"
                )));
            }
            model.mean[f] = mean;
            model.coef[f] = weight / scale;
        }
        Ok(model)
    }

    /// The score of a feature row, and each feature's contribution to the log-odds.
    pub fn score(
        &self,
        row: &[f64; FEATURE_COUNT],
        contributions: &mut [f64; FEATURE_COUNT],
    ) -> u16 {
        let mut z = self.bias;
        for f in 0..FEATURE_COUNT {
            let c = self.coef[f] * (row[f] - self.mean[f]);
            contributions[f] = c;
            z += c;
        }
        let p = 1.0 / (1.0 + (-z).exp());
        // p is in [0, 1] for every finite or infinite z, so this cannot overflow.
        (p * f64::from(SCORE_MAX)).round() as u16
    }
}
