//! What the operator-command tests share.

use std::time::Duration;

/// Deadline of every wait.
pub(super) const WAIT: Duration = Duration::from_secs(20);

/// A RabbitMQ user of its own for one test, with exactly the permissions
/// docs/operations/deploy.md tells operators to grant corral, on vhost `/`. Dropping
/// it deletes the user, also when the test failed.
pub(super) struct DocumentedBrokerUser {
    name: String,
    /// An AMQP URL logging in as this user.
    pub(super) url: String,
}

impl DocumentedBrokerUser {
    pub(super) fn new() -> Self {
        let [configure, write, read] = documented_permissions();
        let name = corral_testkit::unique_name("ops-user");
        let password = uuid::Uuid::now_v7().simple().to_string();
        let user = Self {
            url: format!("amqp://{name}:{password}@127.0.0.1:5672/%2f"),
            name,
        };
        rabbitmqctl(&["add_user", &user.name, &password]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &user.name,
            &configure,
            &write,
            &read,
        ]);
        user
    }
}

impl Drop for DocumentedBrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (RabbitMQ's CLI) on PATH");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The configure, write and read regexes of the `rabbitmqctl set_permissions`
/// line in docs/operations/deploy.md, so the test follows the documentation.
fn documented_permissions() -> [String; 3] {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations/deploy.md"
    );
    let docs = std::fs::read_to_string(path).expect("docs/operations/deploy.md");
    let line = docs
        .lines()
        .find(|line| line.contains("rabbitmqctl set_permissions"))
        .expect("docs/operations/deploy.md documents the broker permissions");
    let quoted: Vec<String> = line
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    quoted
        .try_into()
        .unwrap_or_else(|found| panic!("three quoted regexes in {line:?}, found {found:?}"))
}
