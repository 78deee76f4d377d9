-- Example CRM schema for pgveil: an ordinary customer database as a company
-- would already have it. pgveil protects it without changing it.
-- Base tables live in schema "public"; pgveil installs its privacy views in
-- schemas of its own (one per view set).

CREATE TABLE sales_reps (
    rep_id          integer PRIMARY KEY,
    full_name       text    NOT NULL,
    email           text    NOT NULL,
    region          text    NOT NULL,          -- e.g. 'north', 'south', 'east', 'west'
    commission_pct  numeric(5,2) NOT NULL
);

CREATE TABLE customers (
    customer_id     bigint  PRIMARY KEY,
    account_no      text    NOT NULL UNIQUE,    -- identity
    first_name      text    NOT NULL,           -- identity
    last_name       text    NOT NULL,           -- identity
    email           text,                       -- identity
    phone           text,                       -- identity
    national_id     text,                       -- identity
    date_of_birth   date,                       -- personal
    gender          text,                       -- personal
    annual_income   numeric(12,2),              -- personal
    street          text,                       -- personal
    city            text,                       -- personal
    postal_code     text,                       -- personal
    country         char(2) NOT NULL,           -- non-personal
    region          text    NOT NULL,           -- non-personal (sales region)
    ethnicity       text,                       -- sensitive
    religion        text,                       -- sensitive
    health_notes    text,                       -- sensitive
    date_of_death   date,                       -- sensitive
    rep_id          integer REFERENCES sales_reps(rep_id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_active_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_region_idx ON customers (region);
CREATE INDEX customers_email_idx  ON customers (email text_pattern_ops);
CREATE INDEX customers_country_idx ON customers (country);

CREATE TABLE contact_preferences (
    customer_id              bigint PRIMARY KEY REFERENCES customers(customer_id) ON DELETE CASCADE,
    preferred_channel        text    NOT NULL,   -- 'email', 'phone', 'post', 'sms'
    prefers_email_over_calls boolean NOT NULL,
    best_time_to_call        text,
    language                 text    NOT NULL
);

CREATE TABLE opportunities (
    opportunity_id  bigint  PRIMARY KEY,
    customer_id     bigint  NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
    rep_id          integer REFERENCES sales_reps(rep_id),
    title           text    NOT NULL,
    stage           text    NOT NULL,           -- 'lead', 'qualified', 'proposal', 'won', 'lost'
    amount          numeric(12,2) NOT NULL,
    opened_on       date    NOT NULL,
    closed_on       date
);
CREATE INDEX opportunities_customer_idx ON opportunities (customer_id);

CREATE TABLE orders (
    order_id        bigint  PRIMARY KEY,
    customer_id     bigint  NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
    ordered_at      timestamptz NOT NULL,
    total           numeric(12,2) NOT NULL,
    status          text    NOT NULL            -- 'placed', 'shipped', 'delivered', 'returned'
);
CREATE INDEX orders_customer_idx ON orders (customer_id);

-- One row per customer and purpose; a missing row means no consent recorded.
CREATE TABLE consents (
    customer_id     bigint  NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
    purpose         text    NOT NULL,           -- 'direct_marketing', 'third_party_disclosure',
                                                -- 'automated_decision', 'sensitive_data'
    granted         boolean NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, purpose)
);
