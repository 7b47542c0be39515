package deliver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/auth"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
)

func TestListDeliveriesPagesAndScopes(t *testing.T) {
	h := newHarness(t)
	s := New(h.opts)
	ctx := context.Background()
	for i := range 7 {
		user, camp := "u1", "c1"
		if i%2 == 1 {
			user = "u2"
		}
		if i >= 5 {
			camp = "c2"
		}
		if _, err := h.pool.Exec(ctx, `INSERT INTO deliver_deliveries (delivery_id, workspace_id, campaign_id, variant_id, user_id, channel,
			content_ref, topic, decision, state, send_time, next_attempt_at, create_time)
			VALUES ($1,$2,$3,'A',$4,1,'t','',''::bytea,'sent',now(),now(),$5)`,
			fmt.Sprintf("d%d", i), h.ws, camp, user, time.Now().Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	hd := NewHandler(s, nil)
	mine := auth.NewContext(ctx, &auth.Principal{WorkspaceID: h.ws})
	list := func(req *deliveryv1.ListDeliveriesRequest) []string {
		t.Helper()
		var ids []string
		for {
			res, err := hd.ListDeliveries(mine, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range res.GetDeliveries() {
				ids = append(ids, d.GetDeliveryId())
			}
			if res.GetNextPageToken() == "" {
				return ids
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
	tests := []struct {
		name string
		req  *deliveryv1.ListDeliveriesRequest
		want string
	}{
		{"all, pages of 2", &deliveryv1.ListDeliveriesRequest{PageSize: 2}, "[d6 d5 d4 d3 d2 d1 d0]"},
		{"one user", &deliveryv1.ListDeliveriesRequest{UserId: "u2", PageSize: 1}, "[d5 d3 d1]"},
		{"user and campaign", &deliveryv1.ListDeliveriesRequest{UserId: "u1", CampaignId: "c2"}, "[d6]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(list(tt.req)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	errs := []struct {
		name string
		ctx  context.Context
		call func(context.Context) error
		code connect.Code
	}{
		{"other workspace", auth.NewContext(ctx, &auth.Principal{WorkspaceID: uuid.NewString()}), func(c context.Context) error {
			_, err := hd.ListDeliveries(c, &deliveryv1.ListDeliveriesRequest{WorkspaceId: h.ws})
			return err
		}, connect.CodePermissionDenied},
		{"not found elsewhere", auth.NewContext(ctx, &auth.Principal{WorkspaceID: uuid.NewString()}), func(c context.Context) error {
			_, err := hd.GetDelivery(c, &deliveryv1.GetDeliveryRequest{DeliveryId: "d1"})
			return err
		}, connect.CodeNotFound},
		{"no principal", ctx, func(c context.Context) error {
			_, err := hd.GetDelivery(c, &deliveryv1.GetDeliveryRequest{DeliveryId: "d1"})
			return err
		}, connect.CodeUnauthenticated},
		{"bad page token", mine, func(c context.Context) error {
			_, err := hd.ListDeliveries(c, &deliveryv1.ListDeliveriesRequest{PageToken: "!!"})
			return err
		}, connect.CodeInvalidArgument},
		{"page size", mine, func(c context.Context) error {
			_, err := hd.ListDeliveries(c, &deliveryv1.ListDeliveriesRequest{PageSize: 5000})
			return err
		}, connect.CodeInvalidArgument},
		{"no delivery id", mine, func(c context.Context) error {
			_, err := hd.GetDelivery(c, &deliveryv1.GetDeliveryRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"mark none", mine, func(c context.Context) error {
			_, err := hd.MarkInAppRead(c, &deliveryv1.MarkInAppReadRequest{UserId: "u1"})
			return err
		}, connect.CodeInvalidArgument},
		{"admin names no workspace", auth.NewContext(ctx, &auth.Principal{Admin: true}), func(c context.Context) error {
			_, err := hd.ListDeliveries(c, &deliveryv1.ListDeliveriesRequest{})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if got := connect.CodeOf(tt.call(tt.ctx)); got != tt.code {
				t.Errorf("code %v, want %v", got, tt.code)
			}
		})
	}
}
