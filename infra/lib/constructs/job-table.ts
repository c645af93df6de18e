/**
 * `JobTable`: the jobs of every user, one item per job, as `barge-aws`'s `DynamoJobStore`
 * reads and writes them (crates/aws/src/dynamo.rs): partition key `id`, the `by_owner` and
 * the sparse `active` GSIs (both sorted by `created_at`), TTL on `expires_at`. The store
 * never scans (docs/design-notes.md 4) and filters expired items itself (docs/design-notes.md 7).
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, ProjectionType, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import { Grant, IGrantable, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { IKey } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { expectWildcards } from '../nag';

/** Names the store's code relies on (`TableNames` in crates/aws). */
export const TABLE_NAMES = { byOwner: 'by_owner', active: 'active', ttl: 'expires_at' } as const;

/** The item-level actions the store uses: conditional puts and updates (also inside transactions), gets and index queries. */
const STORE_ACTIONS = ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query'];

export interface JobTableProps {
  /** Encrypts the table at rest. */
  readonly key: IKey;
  /** What happens to the table (and its jobs) when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
}

/** The job table. */
export class JobTable extends Construct {
  /** The DynamoDB table. */
  public readonly table: Table;
  private readonly key: IKey;

  constructor(scope: Construct, id: string, props: JobTableProps) {
    super(scope, id);
    this.key = props.key;
    const createdAt = { name: 'created_at', type: AttributeType.NUMBER };
    // `Table`, not `TableV2`: TableV2 cannot use a customer-managed key in an
    // environment-agnostic stack.
    this.table = new Table(this, 'Table', {
      partitionKey: { name: 'id', type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: TABLE_NAMES.ttl,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: props.key,
      deletionProtection: props.removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy: props.removalPolicy,
    });
    for (const [indexName, partition] of [
      [TABLE_NAMES.byOwner, 'owner'],
      [TABLE_NAMES.active, 'active_pk'],
    ] as const) {
      this.table.addGlobalSecondaryIndex({
        indexName,
        partitionKey: { name: partition, type: AttributeType.STRING },
        sortKey: createdAt,
        projectionType: ProjectionType.ALL,
      });
    }
  }

  /**
   * Lets `grantee` use the table the way the store does, and nothing more: no scans, no
   * deletes, no batch or table-level actions; the key only through DynamoDB.
   */
  public grantStore(grantee: IGrantable): void {
    expectWildcards(grantee.grantPrincipal, [
      { finding: /^Resource::.+\/index\/\*$/, reason: "The job table's own GSIs (by_owner, active), queried by the store" },
      { finding: /^Action::kms:GenerateDataKey\*$/, reason: "DynamoDB's envelope encryption with the table's key, allowed only through DynamoDB (kms:ViaService)" },
    ]);
    Grant.addToPrincipal({
      grantee,
      actions: STORE_ACTIONS,
      resourceArns: [this.table.tableArn, `${this.table.tableArn}/index/*`],
    });
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:DescribeKey'],
        resources: [this.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${this.table.stack.region}.amazonaws.com` } },
      }),
    );
  }
}
