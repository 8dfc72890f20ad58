//! Where a reply may not go.
//!
//! A reply is published to the default exchange with the command's
//! `reply_to` as routing key, so it lands in the queue of that name. Every
//! queue and exchange the worker owns is named `P.…` for its prefix `P`
//! (`P.commands`, `P.commands.dead`, `P.events`, …): a `reply_to` among
//! them would have the worker write into its own command or dead-letter
//! queue. Such a command is dead-lettered unapplied and unanswered.

/// True when `reply_to` is the prefix itself or a name under it (`P.…`).
pub fn is_forbidden_reply_to(prefix: &str, reply_to: &str) -> bool {
    reply_to
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_workers_own_queues_are_forbidden() {
        for name in ["P.commands", "P.commands.dead", "P.dead", "P.events", "P"] {
            assert!(is_forbidden_reply_to("P", name), "{name}");
        }
        assert!(is_forbidden_reply_to(
            "user_lifecycle",
            "user_lifecycle.anything"
        ));
    }

    #[test]
    fn other_queues_are_allowed() {
        for name in [
            "amq.gen-Xa2x",
            "amq.rabbitmq.reply-to",
            "portal.replies",
            "PX.commands",
            "p.commands",
            "",
        ] {
            assert!(!is_forbidden_reply_to("P", name), "{name}");
        }
    }

    proptest! {
        #[test]
        fn any_name_under_the_prefix_is_forbidden(
            prefix in "[a-z_][a-z0-9_.-]{0,20}",
            rest in "[ -~]{0,40}",
        ) {
            let reply_to = format!("{prefix}.{rest}");
            prop_assert!(is_forbidden_reply_to(&prefix, &reply_to));
        }

        #[test]
        fn a_name_not_starting_with_the_prefix_and_a_dot_is_allowed(
            prefix in "[a-z_][a-z0-9_-]{0,20}",
            reply_to in "[ -~]{0,40}",
        ) {
            let under = reply_to == prefix || reply_to.starts_with(&format!("{prefix}."));
            prop_assert_eq!(is_forbidden_reply_to(&prefix, &reply_to), under);
        }
    }
}
