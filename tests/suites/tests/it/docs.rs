//! The documentation cannot drift from the code: every setting either binary
//! accepts is in the README's configuration table with its default.

use clap::CommandFactory;

fn settings(command: clap::Command) -> Vec<(String, Option<String>)> {
    let mut found: Vec<(String, Option<String>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let default = arg
                .get_default_values()
                .first()
                .map(|value| value.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect();
    for sub in command.get_subcommands() {
        found.extend(settings(sub.clone()));
    }
    found
}

#[test]
fn every_setting_is_in_the_readme_with_its_default() {
    let readme =
        std::fs::read_to_string(corral_testkit::process::workspace_root().join("README.md"))
            .expect("reading README.md");
    let mut all = settings(corral_ingress::config::IngressConfig::command());
    all.extend(settings(corral_worker::config::Cli::command()));
    assert!(all.len() > 20, "found only {} settings", all.len());
    for (env, default) in all {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{env}` |")))
            .unwrap_or_else(|| panic!("{env} is not in the README's configuration table"));
        if let Some(default) = default {
            // Admin listeners have per-binary defaults written as one row.
            assert!(
                row.contains(&format!("`{default}`")),
                "the README row for {env} does not show its default `{default}`: {row}"
            );
        }
    }
}
