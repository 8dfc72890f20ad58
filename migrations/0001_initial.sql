-- user-lifecycle: initial schema.
-- State (organizations, accounts, users, tokens), the idempotency record of
-- every processed command, the transactional outbox and the audit trail.

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contract_accounts (
    organization_id text NOT NULL REFERENCES organizations (id),
    id              text NOT NULL,
    name            text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE delivery_accounts (
    organization_id   text NOT NULL REFERENCES organizations (id),
    id                text NOT NULL,
    name              text NOT NULL,
    contract_accounts text[] NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

-- The permission catalog of the contract.
CREATE TABLE permissions (
    name        text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO permissions (name, description) VALUES
    ('services.view',   'View services'),
    ('services.manage', 'Manage services'),
    ('cases.view',      'View support cases'),
    ('cases.create',    'Create support cases'),
    ('orders.view',     'View orders'),
    ('orders.create',   'Place orders'),
    ('invoices.view',   'View invoices'),
    ('documents.view',  'View documents');

CREATE TABLE users (
    id                    uuid PRIMARY KEY,
    organization_id       text NOT NULL REFERENCES organizations (id),
    delivery_account_id   text NULL,
    kind                  text NOT NULL CHECK (kind IN ('personal', 'group')),
    email                 text NOT NULL,
    first_name            text NOT NULL,
    last_name             text NOT NULL,
    phone                 text NOT NULL,
    country               text NOT NULL,
    locale                text NOT NULL,
    role                  text NOT NULL CHECK (role IN ('manager', 'user')),
    permissions           text[] NOT NULL,
    contract_accounts     text[] NULL,  -- NULL means all
    delivery_accounts     text[] NULL,  -- NULL means all
    status                text NOT NULL CHECK (status IN ('invited', 'expired', 'active', 'removed')),
    invited_by            uuid NULL REFERENCES users (id),
    activation_expires_at timestamptz NULL,
    activated_at          timestamptz NULL,
    removed_at            timestamptz NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, delivery_account_id) REFERENCES delivery_accounts (organization_id, id)
);

-- Email uniqueness is global and case-insensitive; removed users keep theirs.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_organization_idx ON users (organization_id, status, role);
-- The expiry sweep walks this.
CREATE INDEX users_invite_expiry_idx ON users (activation_expires_at) WHERE status = 'invited';

-- One-time tokens: only the SHA-256 of the token is stored.
CREATE TABLE tokens (
    hash        bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    purpose     text NOT NULL CHECK (purpose IN ('activation', 'password_reset')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz NULL,
    revoked_at  timestamptz NULL
);
CREATE INDEX tokens_user_idx ON tokens (user_id, purpose, created_at DESC);

-- Idempotency: every command id processed, with the reply it got.
CREATE TABLE processed_commands (
    command_id    text PRIMARY KEY,
    command_type  text NOT NULL,
    status        text NOT NULL,
    reply         jsonb NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: emails, events, replies and dead letters written in
-- the command's transaction and delivered by the relay.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('email', 'event', 'reply', 'dead_letter')),
    message_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    claimed_until timestamptz NULL,
    sent_at       timestamptz NULL,
    failed_at     timestamptz NULL,
    last_error    text NULL
);
CREATE INDEX outbox_due_idx ON outbox (available_at, id) WHERE sent_at IS NULL AND failed_at IS NULL;

-- Audit trail: every accepted change to a user.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    command_id  text NULL,
    actor_id    uuid NULL,
    user_id     uuid NULL,
    organization_id text NOT NULL,
    action      text NOT NULL,
    before      jsonb NULL,
    after       jsonb NULL
);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, at);
