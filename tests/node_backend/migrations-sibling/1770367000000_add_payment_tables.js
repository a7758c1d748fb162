/* eslint-disable camelcase */
// A sibling backend of the same lineage: numeric amounts, shorter order ids and
// upper-case statuses; otherwise the same layout as ../migrations.

exports.shorthands = undefined;

exports.up = (pgm) => {
  pgm.createTable('payment_transactions', {
    id: {
      type: 'uuid',
      primaryKey: true,
      default: pgm.func('gen_random_uuid()'),
    },
    user_id: {
      type: 'bigint',
      notNull: true,
      references: 'users',
      onDelete: 'CASCADE',
    },
    order_id: { type: 'varchar(32)', notNull: true },
    gross_amount: { type: 'numeric(12,2)', notNull: true },
    payment_type: { type: 'varchar(50)', notNull: true },
    status: { type: 'varchar(20)', notNull: true, default: 'PENDING' },
    midtrans_transaction_id: { type: 'varchar(255)' },
    midtrans_response_json: { type: 'jsonb' },
    created_at: {
      type: 'timestamp',
      notNull: true,
      default: pgm.func('current_timestamp'),
    },
    updated_at: {
      type: 'timestamp',
      notNull: true,
      default: pgm.func('current_timestamp'),
    },
    paid_at: { type: 'timestamp' },
  });
  pgm.createIndex('payment_transactions', 'order_id', { unique: true });
  pgm.createIndex('payment_transactions', 'user_id');
  pgm.createIndex('payment_transactions', 'status');
  pgm.createIndex('payment_transactions', 'midtrans_transaction_id', { unique: true });

  pgm.createTable('payment_webhook_events', {
    id: {
      type: 'uuid',
      primaryKey: true,
      default: pgm.func('gen_random_uuid()'),
    },
    received_at: {
      type: 'timestamp',
      notNull: true,
      default: pgm.func('current_timestamp'),
    },
    order_id: { type: 'varchar(255)' },
    midtrans_transaction_id: { type: 'varchar(255)' },
    raw_body: { type: 'jsonb', notNull: true },
    signature_key: { type: 'varchar(255)' },
    is_verified: { type: 'boolean', notNull: true, default: false },
    processed: { type: 'boolean', notNull: true, default: false },
    processing_error: { type: 'text' },
  });
  pgm.createIndex('payment_webhook_events', 'order_id');
  pgm.createIndex('payment_webhook_events', 'midtrans_transaction_id');
};

exports.down = (pgm) => {
  pgm.dropTable('payment_webhook_events');
  pgm.dropTable('payment_transactions');
};
