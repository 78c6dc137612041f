//! Output formats shared by commands (`--output json|yaml`).

use clap::ValueEnum;

/// How a describe-like command prints its object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// YAML (the default, like Bacalhau's `job validate`/`describe`).
    #[default]
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// Renders any model value.
    pub fn render<T: serde::Serialize>(self, v: &T, pretty: bool) -> String {
        use gadus_core::model::codec;
        match self {
            Format::Yaml => codec::to_yaml(v),
            Format::Json if pretty => codec::to_json_pretty(v) + "\n",
            Format::Json => codec::to_json(v) + "\n",
        }
    }
}
