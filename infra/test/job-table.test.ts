import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { actions, build, roleStatements } from './support';

const dev = build('dev');
const prod = build('prod');

describe('JobTable', () => {
  it('has the key, indexes and TTL the store uses (crates/aws/src/dynamo.rs)', () => {
    dev.templates.stateful.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
      TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: Match.anyValue() },
      GlobalSecondaryIndexes: Match.arrayWith([
        Match.objectLike({
          IndexName: 'by_owner',
          KeySchema: [
            { AttributeName: 'owner', KeyType: 'HASH' },
            { AttributeName: 'created_at', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'ALL' },
        }),
        Match.objectLike({
          IndexName: 'active',
          KeySchema: [
            { AttributeName: 'active_pk', KeyType: 'HASH' },
            { AttributeName: 'created_at', KeyType: 'RANGE' },
          ],
        }),
      ]),
    });
  });

  it('names the indexes and TTL attribute exactly as the Rust store does', () => {
    const rust = fs.readFileSync(path.join(__dirname, '..', '..', 'crates/aws/src/dynamo.rs'), 'utf8');
    for (const name of ['by_owner', 'active', 'expires_at']) {
      assert.match(rust, new RegExp(`: &'static str = "${name}";`), `${name} in TableNames`);
    }
  });

  it('is encrypted with a rotating customer key and has no hard-coded name', () => {
    dev.templates.stateful.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    const table = Object.values(dev.templates.stateful.findResources('AWS::DynamoDB::Table'))[0] as { Properties: Record<string, unknown> };
    assert.equal(table.Properties.TableName, undefined);
  });

  it('is deleted with a dev stage and retained, deletion-protected, in prod', () => {
    dev.templates.stateful.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' });
    prod.templates.stateful.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({ DeletionProtectionEnabled: true }),
    });
    prod.templates.stateful.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain' });
  });

  it('grants the store only item reads, conditional writes and index queries', () => {
    for (const role of ['ApiCoordinatorRole', 'ReaperRole']) {
      const dynamo = actions(roleStatements(dev.templates.service, role)).filter((a) => a.startsWith('dynamodb:'));
      assert.deepEqual([...dynamo].sort(), ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem'], role);
    }
  });

  it('lets the table key be used by the store only through DynamoDB', () => {
    const kms = roleStatements(dev.templates.service, 'ReaperRole').filter((s) => actions([s]).some((a) => a.startsWith('kms:')));
    assert.equal(kms.length, 1);
    assert.deepEqual(Object.keys(kms[0].Condition?.StringEquals ?? {}), ['kms:ViaService']);
  });
});
