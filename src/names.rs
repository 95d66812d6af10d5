//! How an input is called in messages: `--provider-name` on the command line,
//! `provider_name` in an Ansible task. Validation code names inputs in snake_case and
//! lets this turn them into what the user actually typed.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameStyle {
    #[default]
    Cli,
    Module,
}

impl NameStyle {
    pub fn name(self, snake: &str) -> String {
        match self {
            NameStyle::Cli => format!("--{}", snake.replace('_', "-")),
            NameStyle::Module => snake.to_string(),
        }
    }
}
