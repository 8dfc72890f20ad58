//! `preview-email`: renders one of the contract's emails from the templates
//! directory with realistic sample data, to check wording, layout and
//! escaping before templates ship.
//!
//! The sample names carry `&` and angle brackets, so the HTML part shows
//! what users typed escaped; links carry the fake token `SAMPLE-TOKEN`. The
//! locale falls back like a real email's (`nl-BE` → `nl` → `en`), and the
//! preview says when it did.

use chrono::{Duration, Utc};
use clap::ValueEnum;
use serde_json::json;
use std::path::Path;

use super::OpsError;
use crate::domain::locale::Locale;
use crate::domain::notification::{EmailJob, Template};
use crate::handler::email_time;
use crate::mail::templates::FALLBACK_LOCALE;
use crate::mail::{Rendered, Renderer};

/// The token in the sample links.
pub const SAMPLE_TOKEN: &str = "SAMPLE-TOKEN";

/// Which part of the email to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreviewFormat {
    /// The plain-text body.
    Text,
    /// The HTML body.
    Html,
    /// The subject line.
    Subject,
    /// Subject, text and HTML, one after the other.
    All,
}

/// A rendered preview, and what the locale fell back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The three parts.
    pub rendered: Rendered,
    /// Set when some part was not found for the locale asked: says which was used.
    pub fallback: Option<String>,
}

/// The template named `name`, or an error listing the valid names.
pub fn parse_template(name: &str) -> Result<Template, String> {
    Template::ALL
        .into_iter()
        .find(|t| t.as_str() == name)
        .ok_or_else(|| {
            let valid: Vec<&str> = Template::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown template {name:?}; valid: {}", valid.join(", "))
        })
}

/// The email the sample data makes for `template` in `locale`.
pub fn sample_job(template: Template, locale: &Locale) -> EmailJob {
    let now = Utc::now();
    let (vars, to, to_name) = match template {
        Template::Activation => (
            json!({
                "first_name": "Anna <Annie>",
                "last_name": "de Vries & Zn.",
                "email": "anna.devries@example.com",
                "organization_name": "Jansen & Zonen <Logistiek> B.V.",
                "inviter_name": "Bea Boss",
                "expires_at": email_time(now + Duration::days(7)),
                "resend": false,
            }),
            "anna.devries@example.com",
            "Anna <Annie> de Vries & Zn.",
        ),
        Template::PasswordReset => (
            json!({
                "first_name": "Anna <Annie>",
                "expires_at": email_time(now + Duration::hours(1)),
            }),
            "anna.devries@example.com",
            "Anna <Annie> de Vries & Zn.",
        ),
        Template::InviteExpired => (
            json!({
                "manager_first_name": "Bea <Boss>",
                "user_first_name": "Anna <Annie>",
                "user_last_name": "de Vries & Zn.",
                "user_email": "anna.devries@example.com",
                "organization_name": "Jansen & Zonen <Logistiek> B.V.",
                "expired_at": email_time(now),
            }),
            "bea.boss@example.com",
            "Bea <Boss>",
        ),
    };
    EmailJob {
        template,
        locale: locale.as_str().to_owned(),
        to: to.to_owned(),
        to_name: to_name.to_owned(),
        vars,
        token: template.link_path().map(|_| SAMPLE_TOKEN.to_owned()),
        user_id: None,
    }
}

/// Renders `template` in `locale` from the templates in `dir`.
pub fn preview(
    dir: &Path,
    portal_url: &str,
    template: Template,
    locale: &Locale,
) -> Result<Preview, OpsError> {
    let renderer = Renderer::load(dir, portal_url)?;
    let rendered = renderer.render(&sample_job(template, locale))?;
    Ok(Preview {
        rendered,
        fallback: fallback_note(dir, template, locale),
    })
}

/// The locale directory each part comes from, as the renderer picks it:
/// the locale, then its language, then `en`.
fn used_locales(dir: &Path, template: Template, locale: &Locale) -> Vec<(&'static str, String)> {
    ["subject", "txt", "html"]
        .into_iter()
        .map(|part| {
            let file = format!("{}.{part}.hbs", template.as_str());
            let used = [locale.as_str(), locale.language()]
                .into_iter()
                .find(|candidate| dir.join(candidate).join(&file).is_file())
                .unwrap_or(FALLBACK_LOCALE);
            (part, used.to_owned())
        })
        .collect()
}

fn fallback_note(dir: &Path, template: Template, locale: &Locale) -> Option<String> {
    let used = used_locales(dir, template, locale);
    if used.iter().all(|(_, l)| l == locale.as_str()) {
        return None;
    }
    let what = if used.iter().all(|(_, l)| *l == used[0].1) {
        format!("the `{}` templates", used[0].1)
    } else {
        used.iter()
            .map(|(part, l)| format!("{part} from `{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "locale `{locale}` has no complete `{}` template in {}; rendered {what} \
         (a locale falls back to its language, then to `{FALLBACK_LOCALE}`)",
        template.as_str(),
        dir.display(),
    ))
}

/// The `format` part of `rendered`, ready to print.
pub fn format(rendered: &Rendered, format: PreviewFormat) -> String {
    match format {
        PreviewFormat::Subject => format!("{}\n", rendered.subject),
        PreviewFormat::Text => with_newline(&rendered.text),
        PreviewFormat::Html => with_newline(&rendered.html),
        PreviewFormat::All => format!(
            "Subject: {}\n\n----- text -----\n{}----- html -----\n{}",
            rendered.subject,
            with_newline(&rendered.text),
            with_newline(&rendered.html)
        ),
    }
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
    }

    fn locale(s: &str) -> Locale {
        Locale::parse(s).unwrap()
    }

    #[test]
    fn every_template_renders_escaped_with_the_sample_token() {
        for template in Template::ALL {
            let p = preview(
                &shipped(),
                "https://portal.example.com",
                template,
                &locale("en"),
            )
            .unwrap();
            assert_eq!(p.fallback, None);
            assert!(
                p.rendered.html.contains("Anna &lt;Annie&gt;"),
                "{template:?}"
            );
            assert!(!p.rendered.html.contains("<Annie>"), "{template:?}");
            assert!(p.rendered.text.contains("Anna <Annie>"), "{template:?}");
            if let Some(path) = template.link_path() {
                let link = format!("https://portal.example.com{path}?token=SAMPLE-TOKEN");
                assert!(p.rendered.text.contains(&link), "{template:?}");
            }
        }
    }

    #[test]
    fn a_regional_locale_falls_back_to_its_language_and_an_unknown_one_to_english() {
        let dir = shipped();
        let p = preview(&dir, "http://x", Template::Activation, &locale("nl-BE")).unwrap();
        assert!(p.rendered.text.contains("Beste"));
        assert!(p.fallback.unwrap().contains("the `nl` templates"));
        let p = preview(&dir, "http://x", Template::Activation, &locale("pt")).unwrap();
        assert!(p.rendered.text.contains("Hello"));
        assert!(p.fallback.unwrap().contains("the `en` templates"));
    }

    #[test]
    fn unknown_template_names_the_valid_ones() {
        assert_eq!(
            parse_template("password_reset"),
            Ok(Template::PasswordReset)
        );
        let err = parse_template("welcome").unwrap_err();
        assert!(
            err.contains("activation, password_reset, invite_expired"),
            "{err}"
        );
    }

    #[test]
    fn all_prints_the_three_parts() {
        let r = Rendered {
            subject: "S".into(),
            text: "T".into(),
            html: "<p>H</p>\n".into(),
        };
        assert_eq!(
            format(&r, PreviewFormat::All),
            "Subject: S\n\n----- text -----\nT\n----- html -----\n<p>H</p>\n"
        );
        assert_eq!(format(&r, PreviewFormat::Subject), "S\n");
    }
}
