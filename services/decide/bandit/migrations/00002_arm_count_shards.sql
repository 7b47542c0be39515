-- The arms' totals, sharded so that concurrent transactions never share a
-- counter row.
--
-- bandit_arms had one row per variant: every transaction that decided for a
-- campaign locked it from its first exposure until it committed, so the
-- consumer's partitions and the Decide batches deciding for one campaign
-- waited for each other's commits. bandit_arm_counts splits each total
-- over shards; a transaction writes to one shard only, claimed by
-- bandit_counter_shard, and an arm's total is the sum over its shards.

-- +goose Up
CREATE TABLE bandit_arm_counts (
    workspace_id text     NOT NULL,
    campaign_id  text     NOT NULL,
    variant_id   text     NOT NULL,
    shard        smallint NOT NULL CHECK (shard >= 0),
    exposures    bigint   NOT NULL DEFAULT 0 CHECK (exposures >= 0),
    -- No conversions <= exposures here: a conversion is counted in the
    -- converting transaction's shard, not in the one its exposure went to.
    -- The bound holds for the sums, by bandit_decisions.
    conversions  bigint   NOT NULL DEFAULT 0 CHECK (conversions >= 0),
    PRIMARY KEY (workspace_id, campaign_id, variant_id, shard)
);

INSERT INTO bandit_arm_counts (workspace_id, campaign_id, variant_id, shard, exposures, conversions)
SELECT workspace_id, campaign_id, variant_id, 0, exposures, conversions FROM bandit_arms;

DROP TABLE bandit_arms;

-- bandit_counter_shard returns the shard the current transaction counts
-- in, claiming one on its first call: the lowest of the 32 shards that no
-- other transaction holds, by a transaction-scoped advisory lock on
-- (0x62616e64 "band", shard). Later calls in the transaction return the
-- same shard (remembered in a transaction-local setting), so a transaction
-- holds one shard and only its holder writes a shard's rows: counter rows
-- are never waited for. Only when all 32 are held does a transaction wait,
-- for the shard its backend pid picks, without holding another one, so
-- the shards cannot deadlock among themselves. Lowest first keeps the rows
-- per arm near the peak number of concurrent transactions.
-- The two-int4 advisory key space does not overlap the bigint one the
-- other services' locks and goose's migration lock use.
-- +goose StatementBegin
CREATE FUNCTION bandit_counter_shard() RETURNS smallint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s int := nullif(current_setting('whisper.bandit_shard', true), '')::int;
BEGIN
    IF s IS NOT NULL THEN
        RETURN s;
    END IF;
    FOR i IN 0..31 LOOP
        IF pg_try_advisory_xact_lock(x'62616e64'::int, i) THEN
            s := i;
            EXIT;
        END IF;
    END LOOP;
    IF s IS NULL THEN
        s := pg_backend_pid() % 32;
        PERFORM pg_advisory_xact_lock(x'62616e64'::int, s);
    END IF;
    PERFORM set_config('whisper.bandit_shard', s::text, true);
    RETURN s;
END
$$;
-- +goose StatementEnd

-- +goose Down
CREATE TABLE bandit_arms (
    workspace_id text   NOT NULL,
    campaign_id  text   NOT NULL,
    variant_id   text   NOT NULL,
    exposures    bigint NOT NULL DEFAULT 0 CHECK (exposures >= 0),
    conversions  bigint NOT NULL DEFAULT 0 CHECK (conversions >= 0 AND conversions <= exposures),
    PRIMARY KEY (workspace_id, campaign_id, variant_id)
);

INSERT INTO bandit_arms (workspace_id, campaign_id, variant_id, exposures, conversions)
SELECT workspace_id, campaign_id, variant_id, sum(exposures), sum(conversions)
FROM bandit_arm_counts GROUP BY workspace_id, campaign_id, variant_id;

DROP FUNCTION bandit_counter_shard();
DROP TABLE bandit_arm_counts;
