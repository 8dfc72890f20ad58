//! Loads `templates/<locale>/<name>.{subject,txt,html}.hbs` and renders them.
//!
//! Two registries: HTML templates escape what users typed; subject and text
//! templates do not (they are not HTML). A locale without its own template
//! falls back to its language (`nl-BE` → `nl`), then to `en`.

use handlebars::{Context, Handlebars, no_escape};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use thiserror::Error;

use crate::domain::notification::{EmailJob, Template};

/// The locale every template must exist in.
pub const FALLBACK_LOCALE: &str = "en";

const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// Why templates could not be loaded or rendered.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// The directory could not be read.
    #[error("cannot read templates directory {dir}")]
    Io {
        /// The directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A template does not parse.
    #[error("template {name} does not parse: {detail}")]
    Parse {
        /// `locale/name.part`.
        name: String,
        /// The parser's message.
        detail: String,
    },
    /// A required template is missing.
    #[error("template {0} is missing; every email needs subject, txt and html in `en`")]
    Missing(String),
    /// Rendering failed.
    #[error("rendering {name} failed: {detail}")]
    Render {
        /// `locale/name.part`.
        name: String,
        /// The renderer's message.
        detail: String,
    },
}

/// An email's three rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// Plain text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// The loaded templates and what every email links to.
#[derive(Debug)]
pub struct Renderer {
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
    locales: BTreeSet<String>,
    portal_url: String,
}

impl Renderer {
    /// Loads every template under `dir`; fails unless all of `en` is present.
    pub fn load(dir: &Path, portal_url: &str) -> Result<Renderer, TemplateError> {
        let io = |source| TemplateError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let mut html = Handlebars::new();
        html.set_strict_mode(false);
        let mut plain = Handlebars::new();
        plain.register_escape_fn(no_escape);
        let mut locales = BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.file_type().map_err(io)?.is_dir() {
                continue;
            }
            let locale = entry.file_name().to_string_lossy().into_owned();
            for template in Template::ALL {
                for part in PARTS {
                    let path = entry
                        .path()
                        .join(format!("{}.{part}.hbs", template.as_str()));
                    if !path.exists() {
                        continue;
                    }
                    let source = std::fs::read_to_string(&path).map_err(io)?;
                    let name = key(&locale, template, part);
                    let registry = if part == "html" {
                        &mut html
                    } else {
                        &mut plain
                    };
                    registry
                        .register_template_string(&name, source)
                        .map_err(|e| TemplateError::Parse {
                            name: name.clone(),
                            detail: e.to_string(),
                        })?;
                }
            }
            locales.insert(locale);
        }
        for template in Template::ALL {
            for part in PARTS {
                let name = key(FALLBACK_LOCALE, template, part);
                let registry = if part == "html" { &html } else { &plain };
                if !registry.has_template(&name) {
                    return Err(TemplateError::Missing(name));
                }
            }
        }
        Ok(Renderer {
            html,
            plain,
            locales,
            portal_url: portal_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The locales that have at least one template.
    pub fn locales(&self) -> &BTreeSet<String> {
        &self.locales
    }

    /// The template name to use for `locale`: exact, then language, then `en`.
    fn resolve(&self, locale: &str, template: Template, part: &str) -> String {
        let language = locale.split(['-', '_']).next().unwrap_or(locale);
        for candidate in [locale, language] {
            let name = key(candidate, template, part);
            let registry = if part == "html" {
                &self.html
            } else {
                &self.plain
            };
            if registry.has_template(&name) {
                return name;
            }
        }
        key(FALLBACK_LOCALE, template, part)
    }

    /// The variables a job's templates see: its own plus `portal_url` and `link`.
    fn variables(&self, job: &EmailJob) -> Value {
        let mut vars = job.vars.clone();
        if let Value::Object(map) = &mut vars {
            map.insert("portal_url".into(), Value::String(self.portal_url.clone()));
            if let (Some(path), Some(token)) = (job.template.link_path(), &job.token) {
                map.insert(
                    "link".into(),
                    Value::String(format!("{}{path}?token={token}", self.portal_url)),
                );
            }
        }
        vars
    }

    /// Renders `job` in its locale (with fallback).
    pub fn render(&self, job: &EmailJob) -> Result<Rendered, TemplateError> {
        // One context for the three parts: `render` would copy the
        // variables into a context of its own for each.
        let vars = Context::from(self.variables(job));
        let render = |part: &str| {
            let name = self.resolve(&job.locale, job.template, part);
            let registry = if part == "html" {
                &self.html
            } else {
                &self.plain
            };
            registry
                .render_with_context(&name, &vars)
                .map_err(|e| TemplateError::Render {
                    name,
                    detail: e.to_string(),
                })
        };
        let subject = render("subject")?;
        Ok(Rendered {
            // A subject is one line whatever the template or the data hold.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

fn key(locale: &str, template: Template, part: &str) -> String {
    format!("{locale}/{}.{part}", template.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn renderer() -> Renderer {
        Renderer::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("templates")
                .as_path(),
            "https://portal.example.com/",
        )
        .expect("the shipped templates load")
    }

    fn job(locale: &str) -> EmailJob {
        EmailJob {
            template: Template::Activation,
            locale: locale.into(),
            to: "ann@example.com".into(),
            to_name: "Ann".into(),
            vars: json!({"first_name": "<b>Ann</b>", "last_name": "Smith", "email": "ann@example.com",
                         "organization_name": "Acme & Co", "inviter_name": "Bob", "expires_at": "2026-11-30 10:00 UTC",
                         "resend": false}),
            token: Some("TOKEN123".into()),
            user_id: None,
        }
    }

    #[test]
    fn shipped_templates_cover_every_email_in_four_locales() {
        let r = renderer();
        for locale in ["en", "nl", "de", "fr"] {
            assert!(r.locales().contains(locale), "{locale}");
            for template in Template::ALL {
                for part in PARTS {
                    assert_eq!(
                        r.resolve(locale, template, part),
                        key(locale, template, part)
                    );
                }
            }
        }
    }

    #[test]
    fn html_escapes_what_users_typed_and_text_does_not() {
        let out = renderer().render(&job("en")).unwrap();
        assert!(out.html.contains("&lt;b&gt;Ann&lt;/b&gt;"));
        assert!(!out.html.contains("<b>Ann</b>"));
        assert!(out.text.contains("<b>Ann</b>"));
        assert!(
            out.text
                .contains("https://portal.example.com/activate?token=TOKEN123")
        );
    }

    #[test]
    fn unknown_locale_falls_back_to_language_then_english() {
        let r = renderer();
        assert_eq!(
            r.resolve("nl-BE", Template::Activation, "txt"),
            "nl/activation.txt"
        );
        assert_eq!(
            r.resolve("pt", Template::Activation, "txt"),
            "en/activation.txt"
        );
        assert_eq!(r.render(&job("pt")).unwrap(), r.render(&job("en")).unwrap());
    }

    #[test]
    fn subject_is_one_line() {
        let mut j = job("en");
        j.vars["organization_name"] = json!("Acme\r\nBcc: evil@example.com");
        let out = renderer().render(&j).unwrap();
        assert!(!out.subject.contains('\n') && !out.subject.contains('\r'));
    }

    #[test]
    fn missing_english_template_stops_loading() {
        let dir = std::env::temp_dir().join(format!("ul-templates-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("en")).unwrap();
        let err = Renderer::load(&dir, "http://x").unwrap_err();
        assert!(matches!(err, TemplateError::Missing(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
