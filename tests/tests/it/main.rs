//! corral's integration and end-to-end tests: real RabbitMQ, real PostgreSQL,
//! each test under its own AMQP prefix and in its own database.

mod ingress;
mod smoke;
mod worker;
